//! The [`Backend`] trait on the device: element-wise and row kernels launched here, products,
//! attention and the gate delegated to the sibling modules.

use cudarc::driver::{CudaSlice, PushKernelArg};
use dsgw_kernels::launch;

use super::{Cuda, DeviceBuf, DeviceWeight, arg, n32};
use crate::backend::{Backend, Paged, RopeStyle, Selection, WeightFormat};

impl Backend for Cuda {
    type Buf = DeviceBuf;
    type Weight = DeviceWeight;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, data: &[f32]) -> DeviceBuf {
        if data.is_empty() {
            return self.zeros(0);
        }
        DeviceBuf {
            data: self.stream.clone_htod(data).expect("CUDA copy"),
            len: data.len(),
        }
    }

    fn download(&self, buf: &DeviceBuf) -> Vec<f32> {
        if buf.len == 0 {
            return Vec::new();
        }
        self.stream
            .clone_dtoh(&buf.data.slice(..buf.len))
            .expect("CUDA copy")
    }

    fn len(&self, buf: &DeviceBuf) -> usize {
        buf.len
    }

    fn zeros(&self, len: usize) -> DeviceBuf {
        self.alloc(len)
    }

    fn weight_format(&self) -> WeightFormat {
        self.weights
    }

    fn upload_weight(&self, data: &[f32]) -> DeviceWeight {
        match self.weights {
            WeightFormat::F32 => DeviceWeight::F32(self.upload(data)),
            WeightFormat::Bf16 => {
                // Rounded on the host (the same rounding as `to_bf16`): half the bytes to copy.
                let bits: Vec<u16> = data
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                DeviceWeight::Bf16 {
                    data: if bits.is_empty() {
                        self.stream.alloc_zeros(1).expect("CUDA allocation")
                    } else {
                        self.stream.clone_htod(&bits).expect("CUDA copy")
                    },
                    len: data.len(),
                }
            }
        }
    }

    fn random(&self, len: usize, seed: u64, mean: f32, std: f32) -> DeviceBuf {
        let out = self.zeros(len);
        let n = len as i64;
        let mut b = self.stream.launch_builder(&self.f.fill_normal);
        b.arg(&out.data).arg(&n).arg(&seed).arg(&mean).arg(&std);
        self.run(b, launch::elementwise(len).expect("launch"));
        out
    }

    fn random_weight(&self, len: usize, seed: u64, std: f32) -> DeviceWeight {
        match self.weights {
            WeightFormat::F32 => DeviceWeight::F32(self.random(len, seed, 0.0, std)),
            WeightFormat::Bf16 => {
                let data: CudaSlice<u16> = self
                    .stream
                    .alloc_zeros(len.max(1))
                    .expect("CUDA allocation");
                let n = len as i64;
                let mut b = self.stream.launch_builder(&self.f.fill_normal_bf16);
                b.arg(&data).arg(&n).arg(&seed).arg(&std);
                self.run(b, launch::elementwise(len).expect("launch"));
                DeviceWeight::Bf16 { data, len }
            }
        }
    }

    fn route(
        &self,
        logits: &DeviceBuf,
        gate: &crate::model::gate::MoeGate<'_>,
    ) -> Vec<Vec<(usize, f32)>> {
        self.moe_route(logits, &self.upload(gate.bias), gate.config)
    }

    fn embed(&self, table: &DeviceBuf, ids: &[u32], dim: usize) -> DeviceBuf {
        let rows: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        self.gather_rows(table, &rows, dim)
    }

    fn matmul(&self, x: &DeviceBuf, w: &DeviceWeight, n: usize, k: usize, m: usize) -> DeviceBuf {
        self.blas_matmul(x, w, n, k, m)
    }

    fn head_matmul(
        &self,
        x: &DeviceBuf,
        w: &DeviceWeight,
        n: usize,
        heads: usize,
        k: usize,
        m: usize,
    ) -> DeviceBuf {
        self.blas_head_matmul(x, w, n, heads, k, m)
    }

    fn rms_norm(&self, x: &DeviceBuf, weight: &DeviceBuf, dim: usize, eps: f32) -> DeviceBuf {
        let rows = x.len / dim;
        let out = self.zeros(x.len);
        if rows == 0 {
            return out;
        }
        let l = launch::per_row(rows, dim).expect("launch");
        let dim32 = n32("dim", dim);
        let mut b = self.stream.launch_builder(&self.f.rms_norm);
        b.arg(&x.data)
            .arg(&weight.data)
            .arg(&out.data)
            .arg(&dim32)
            .arg(&eps);
        self.run(b, l);
        out
    }

    fn layer_norm(
        &self,
        x: &DeviceBuf,
        weight: &DeviceBuf,
        bias: &DeviceBuf,
        dim: usize,
        eps: f32,
    ) -> DeviceBuf {
        let rows = x.len / dim;
        let out = self.zeros(x.len);
        if rows == 0 {
            return out;
        }
        let l = launch::per_row(rows, dim).expect("launch");
        let dim32 = n32("dim", dim);
        let mut b = self.stream.launch_builder(&self.f.layer_norm);
        b.arg(&x.data)
            .arg(&weight.data)
            .arg(&bias.data)
            .arg(&out.data)
            .arg(&dim32)
            .arg(&eps);
        self.run(b, l);
        out
    }

    fn slice_cols(
        &self,
        x: &DeviceBuf,
        cols: usize,
        groups: usize,
        start: usize,
        len: usize,
    ) -> DeviceBuf {
        let rows = x.len / cols;
        let out = self.zeros(rows * groups * len);
        let l = launch::elementwise(out.len).expect("launch");
        let (r, c, g, s, n) = (
            n32("rows", rows),
            n32("cols", cols),
            n32("groups", groups),
            n32("start", start),
            n32("len", len),
        );
        let mut b = self.stream.launch_builder(&self.f.slice_cols);
        b.arg(&x.data)
            .arg(&out.data)
            .arg(&r)
            .arg(&c)
            .arg(&g)
            .arg(&s)
            .arg(&n);
        self.run(b, l);
        out
    }

    fn concat_cols(&self, a: &DeviceBuf, ca: usize, b_buf: &DeviceBuf, cb: usize) -> DeviceBuf {
        let rows = a.len / ca;
        let out = self.zeros(rows * (ca + cb));
        let l = launch::elementwise(out.len).expect("launch");
        let (ca32, cb32, rows32) = (n32("ca", ca), n32("cb", cb), n32("rows", rows));
        let mut b = self.stream.launch_builder(&self.f.concat_cols);
        b.arg(&a.data)
            .arg(&ca32)
            .arg(&b_buf.data)
            .arg(&cb32)
            .arg(&out.data)
            .arg(&rows32);
        self.run(b, l);
        out
    }

    fn rope(
        &self,
        x: &mut DeviceBuf,
        heads: usize,
        head_dim: usize,
        rope_dim: usize,
        positions: &[usize],
        cos: &DeviceBuf,
        sin: &DeviceBuf,
        style: RopeStyle,
    ) {
        let rows = positions.len();
        let positions = self.upload_ints(&launch::ints("positions", positions).expect("positions"));
        let l = launch::elementwise(rows * heads * (rope_dim / 2)).expect("launch");
        let (r, h, hd, rd) = (
            n32("rows", rows),
            n32("heads", heads),
            n32("head_dim", head_dim),
            n32("rope_dim", rope_dim),
        );
        let half_split = arg(i32::from(style == RopeStyle::HalfSplit));
        let data = &mut x.data;
        let mut b = self.stream.launch_builder(&self.f.rope);
        b.arg(data)
            .arg(&positions)
            .arg(&cos.data)
            .arg(&sin.data)
            .arg(&r)
            .arg(&h)
            .arg(&hd)
            .arg(&rd)
            .arg(&half_split);
        self.run(b, l);
    }

    fn silu_mul(&self, gate: &DeviceBuf, up: &DeviceBuf) -> DeviceBuf {
        let out = self.zeros(gate.len);
        let n = gate.len as i64;
        let mut b = self.stream.launch_builder(&self.f.silu_mul);
        b.arg(&gate.data).arg(&up.data).arg(&out.data).arg(&n);
        self.run(b, launch::elementwise(gate.len).expect("launch"));
        out
    }

    fn add_assign(&self, x: &mut DeviceBuf, y: &DeviceBuf) {
        let n = x.len as i64;
        let l = launch::elementwise(x.len).expect("launch");
        let data = &mut x.data;
        let mut b = self.stream.launch_builder(&self.f.add_assign);
        b.arg(data).arg(&y.data).arg(&n);
        self.run(b, l);
    }

    fn scatter_add_rows(
        &self,
        out: &mut DeviceBuf,
        y: &DeviceBuf,
        rows: &[usize],
        scale: &[f32],
        dim: usize,
    ) {
        if rows.is_empty() {
            return;
        }
        let rows_dev = self.upload_ints(&launch::ints("rows", rows).expect("rows"));
        let scale_dev: CudaSlice<f32> = self.stream.clone_htod(scale).expect("CUDA copy");
        let (n, d) = (n32("rows", rows.len()), n32("dim", dim));
        let l = launch::elementwise(rows.len() * dim).expect("launch");
        let data = &mut out.data;
        let mut b = self.stream.launch_builder(&self.f.scatter_add_rows);
        b.arg(data)
            .arg(&y.data)
            .arg(&rows_dev)
            .arg(&scale_dev)
            .arg(&n)
            .arg(&d);
        self.run(b, l);
    }

    fn gather_rows(&self, x: &DeviceBuf, rows: &[usize], dim: usize) -> DeviceBuf {
        let out = self.zeros(rows.len() * dim);
        if rows.is_empty() {
            return out;
        }
        let rows_dev = self.upload_ints(&launch::ints("rows", rows).expect("rows"));
        let (n, d) = (n32("rows", rows.len()), n32("dim", dim));
        let mut b = self.stream.launch_builder(&self.f.gather_rows);
        b.arg(&x.data).arg(&rows_dev).arg(&out.data).arg(&n).arg(&d);
        self.run(b, launch::elementwise(out.len).expect("launch"));
        out
    }

    fn concat_rows(&self, parts: &[DeviceBuf]) -> DeviceBuf {
        let total = parts.iter().map(|p| p.len).sum();
        let mut out = self.zeros(total);
        let mut at = 0;
        for p in parts.iter().filter(|p| p.len > 0) {
            self.stream
                .memcpy_dtod(
                    &p.data.slice(..p.len),
                    &mut out.data.slice_mut(at..at + p.len),
                )
                .expect("CUDA copy");
            at += p.len;
        }
        out
    }

    fn copy_rows(
        &self,
        dst: &mut DeviceBuf,
        at: usize,
        src: &DeviceBuf,
        from: usize,
        count: usize,
        width: usize,
    ) {
        if count == 0 {
            return;
        }
        let (d, f, n) = (at * width, from * width, count * width);
        assert!(
            d + n <= dst.len && f + n <= src.len,
            "copy_rows outside a buffer"
        );
        self.stream
            .memcpy_dtod(&src.data.slice(f..f + n), &mut dst.data.slice_mut(d..d + n))
            .expect("CUDA copy");
    }

    fn mla_attention(
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
        self.attend(
            q_lat, q_pe, c, k_pe, heads, r, p, positions, selection, scale,
        )
    }

    fn indexer_scores(
        &self,
        q: &DeviceBuf,
        w: &DeviceBuf,
        k: &Paged<'_, DeviceBuf>,
        heads: usize,
        d: usize,
        positions: &[usize],
        scale: f32,
    ) -> DeviceBuf {
        self.index_scores(q, w, k, heads, d, positions, scale)
    }

    fn topk(&self, scores: &DeviceBuf, len: usize, k: usize) -> Vec<Vec<u32>> {
        self.select_topk(scores, len, k)
    }
}
