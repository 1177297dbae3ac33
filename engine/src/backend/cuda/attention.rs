//! MLA decode attention, the lightning indexer and its top-k on the device, reading the paged
//! KV cache through tables of block addresses.

use cudarc::driver::{CudaSlice, PushKernelArg};
use dsgw_kernels::launch::{self, Candidates};

use super::{Cuda, DeviceBuf, n32};
use crate::backend::{Backend, KV_BLOCK, Paged, Selection};

impl Cuda {
    /// The device table of `paged`'s block addresses, for kernels reading the cache by row
    /// (each block holding `KV_BLOCK` rows of `width`).
    fn block_table(&self, paged: &Paged<'_, DeviceBuf>, width: usize) -> CudaSlice<u64> {
        assert!(
            paged.blocks.iter().all(|b| b.len >= KV_BLOCK * width),
            "a cache block shorter than {KV_BLOCK} rows of {width}"
        );
        use cudarc::driver::DevicePtr;
        // One stream does all the work, so the access guards have nothing to order.
        let addresses: Vec<u64> = paged
            .blocks
            .iter()
            .map(|b| b.data.device_ptr(&self.stream).0)
            .collect();
        let table = launch::block_table(&addresses, paged.len).expect("paged cache");
        if table.is_empty() {
            return self.stream.alloc_zeros(1).expect("CUDA allocation");
        }
        self.stream.clone_htod(&table).expect("CUDA copy")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend(
        &self,
        q_lat: &DeviceBuf,
        q_pe: &DeviceBuf,
        c: &Paged<'_, DeviceBuf>,
        k_pe: &Paged<'_, DeviceBuf>,
        heads: usize,
        r: usize,
        p: usize,
        positions: &[usize],
        selection: Selection<'_>,
        scale: f32,
    ) -> DeviceBuf {
        let n = positions.len();
        let out = self.zeros(n * heads * r);
        if n == 0 {
            return out;
        }
        let len = c.len;
        // A bad index here is an illegal address on the device, which poisons the whole CUDA
        // context: check on the host what the CPU backend would panic on anyway.
        assert!(
            k_pe.len == len && positions.iter().all(|&t| t < len),
            "mla_attention: positions beyond a {len}-row cache"
        );
        assert!(
            q_lat.len == n * heads * r && q_pe.len == n * heads * p,
            "mla_attention: query shapes"
        );
        if let Selection::Sparse(sel) = selection {
            assert_eq!(sel.len(), n, "mla_attention: one selection per query");
        }
        let (sparse, candidates) = match selection {
            Selection::Causal => (
                0i32,
                Candidates {
                    offsets: vec![0],
                    flat: Vec::new(),
                },
            ),
            Selection::Sparse(sel) => (1, Candidates::pack(sel, len).expect("candidates")),
        };
        let longest = match selection {
            Selection::Causal => positions.iter().max().map_or(0, |m| m + 1),
            Selection::Sparse(_) => candidates.longest(),
        };
        let query_heads = n * heads;
        let group = launch::mla_group(heads);
        let splits = launch::mla_splits(query_heads / group, longest, self.multiprocessors);
        let (decode, combine) = launch::mla_decode(n, heads, splits, r, p).expect("launch");
        let positions = self.upload_ints(&launch::ints("positions", positions).expect("positions"));
        let offsets = self.upload_ints(&candidates.offsets);
        let flat = self.upload_ints(&candidates.flat);
        let c_blocks = self.block_table(c, r);
        let kpe_blocks = self.block_table(k_pe, p);
        let part_max = self.zeros(query_heads * splits);
        let part_sum = self.zeros(query_heads * splits);
        let part_acc = self.zeros(query_heads * splits * r);
        let (h, g, r32, p32, s32) = (
            n32("heads", heads),
            n32("group", group),
            n32("r", r),
            n32("p", p),
            n32("splits", splits),
        );
        let mut b = self.stream.launch_builder(&self.f.mla_decode);
        b.arg(&q_lat.data)
            .arg(&q_pe.data)
            .arg(&c_blocks)
            .arg(&kpe_blocks)
            .arg(&positions)
            .arg(&offsets)
            .arg(&flat)
            .arg(&sparse)
            .arg(&h)
            .arg(&g)
            .arg(&r32)
            .arg(&p32)
            .arg(&scale)
            .arg(&s32)
            .arg(&part_max.data)
            .arg(&part_sum.data)
            .arg(&part_acc.data);
        self.run(b, decode);
        let mut b = self.stream.launch_builder(&self.f.mla_combine);
        b.arg(&part_max.data)
            .arg(&part_sum.data)
            .arg(&part_acc.data)
            .arg(&r32)
            .arg(&s32)
            .arg(&out.data);
        self.run(b, combine);
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn index_scores(
        &self,
        q: &DeviceBuf,
        w: &DeviceBuf,
        k: &Paged<'_, DeviceBuf>,
        heads: usize,
        d: usize,
        positions: &[usize],
        scale: f32,
    ) -> DeviceBuf {
        let n = positions.len();
        let len = k.len;
        let out = self.zeros(n * len);
        if n == 0 || len == 0 {
            return out;
        }
        assert!(
            q.len == n * heads * d && w.len == n * heads,
            "indexer_scores: query shapes"
        );
        let l = launch::indexer(n, len, heads, d).expect("launch");
        let positions = self.upload_ints(&launch::ints("positions", positions).expect("positions"));
        let (h, d32, len32) = (n32("heads", heads), n32("d", d), n32("len", len));
        let k_blocks = self.block_table(k, d);
        let mut b = self.stream.launch_builder(&self.f.indexer_scores);
        b.arg(&q.data)
            .arg(&w.data)
            .arg(&k_blocks)
            .arg(&positions)
            .arg(&h)
            .arg(&d32)
            .arg(&len32)
            .arg(&scale)
            .arg(&out.data);
        self.run(b, l);
        out
    }

    pub(super) fn select_topk(&self, scores: &DeviceBuf, len: usize, k: usize) -> Vec<Vec<u32>> {
        let rows = scores.len / len.max(1);
        if rows == 0 || k == 0 {
            return vec![Vec::new(); rows];
        }
        let l = launch::topk(rows, k).expect("launch");
        let idx: CudaSlice<i32> = self.stream.alloc_zeros(rows * k).expect("CUDA allocation");
        let count: CudaSlice<i32> = self.stream.alloc_zeros(rows).expect("CUDA allocation");
        let (len32, k32) = (n32("len", len), n32("k", k));
        let mut b = self.stream.launch_builder(&self.f.topk);
        b.arg(&scores.data)
            .arg(&len32)
            .arg(&k32)
            .arg(&idx)
            .arg(&count);
        self.run(b, l);
        let idx = self.stream.clone_dtoh(&idx).expect("CUDA copy");
        let count = self.stream.clone_dtoh(&count).expect("CUDA copy");
        idx.chunks_exact(k)
            .zip(count)
            .map(|(row, c)| row[..c as usize].iter().map(|&i| i as u32).collect())
            .collect()
    }
}
