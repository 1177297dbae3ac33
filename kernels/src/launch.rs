//! The host side of every launch: grid and block sizes, dynamic shared memory, and the packing
//! of host-side arguments (positions, candidate lists, row indices) into the 32-bit integers the
//! kernels take. Pure functions, so they are tested on machines without a GPU.

/// Rows per KV-cache block (`DSGW_KV_BLOCK` in `common.cuh`): kernels find cached row `s` at
/// row `s % KV_BLOCK` of block `s / KV_BLOCK`, through a table of block pointers.
pub const KV_BLOCK: usize = 64;

/// Threads per block for element-wise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Threads per MLA decode block (8 warps).
pub const MLA_THREADS: u32 = 256;
/// Most heads of one query an MLA decode block takes (`MLA_GROUP` in mla.cu).
pub const MLA_GROUP: usize = 16;
/// Latent dims each MLA decode thread accumulates (`MLA_DIMS` in mla.cu).
const MLA_DIMS: usize = 2;
/// Static shared memory of the MLA decode kernel: scores, running max / sum / correction per
/// head, and the tile's row pointers (`MLA_TILE` = 32 positions).
const MLA_STATIC_SHARED: usize = MLA_GROUP * 32 * 4 + 3 * MLA_GROUP * 4 + 2 * 32 * 8;
/// Candidate positions a split of MLA decode should cover at least.
pub const MLA_MIN_SPLIT: usize = 256;
/// The default dynamic shared memory a block may use without opting in.
pub const SHARED_LIMIT: usize = 48 * 1024;
/// Threads of the top-k kernel (it assumes exactly this many, a power of two).
pub const TOPK_THREADS: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    #[error("{what} = {value} does not fit the kernel's 32-bit argument")]
    TooLarge { what: &'static str, value: usize },
    #[error("a block table of {blocks} blocks cannot hold {rows} cached rows")]
    BlockTable { blocks: usize, rows: usize },
    #[error("{kernel} needs {bytes} bytes of shared memory per block; the limit is {limit}")]
    SharedMemory {
        kernel: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

fn u32_of(what: &'static str, value: usize) -> Result<u32, LaunchError> {
    u32::try_from(value).map_err(|_| LaunchError::TooLarge { what, value })
}

/// An `int` argument.
pub fn int(what: &'static str, value: usize) -> Result<i32, LaunchError> {
    i32::try_from(value).map_err(|_| LaunchError::TooLarge { what, value })
}

/// A list of `int` arguments (positions, rows, ids).
pub fn ints(what: &'static str, values: &[usize]) -> Result<Vec<i32>, LaunchError> {
    values.iter().map(|&v| int(what, v)).collect()
}

/// One thread per element, in blocks of [`ELEMENTWISE_THREADS`].
pub fn elementwise(n: usize) -> Result<Launch, LaunchError> {
    let blocks = n.div_ceil(ELEMENTWISE_THREADS as usize).max(1);
    Ok(Launch {
        grid: (u32_of("blocks", blocks)?, 1, 1),
        block: (ELEMENTWISE_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// One block per row; threads cover the row in warps, up to 1024.
pub fn per_row(rows: usize, dim: usize) -> Result<Launch, LaunchError> {
    let threads = dim.next_multiple_of(32).clamp(32, 1024);
    Ok(Launch {
        grid: (u32_of("rows", rows.max(1))?, 1, 1),
        block: (threads as u32, 1, 1),
        shared_bytes: 0,
    })
}

/// Heads per MLA decode block: the largest divisor of `heads` up to [`MLA_GROUP`] (each block
/// reads the cache once for its group).
pub fn mla_group(heads: usize) -> usize {
    (1..=MLA_GROUP.min(heads.max(1)))
        .rev()
        .find(|g| heads % g == 0)
        .unwrap_or(1)
}

/// How many splits MLA decode uses: enough blocks to fill the device (two per SM), never a
/// split shorter than [`MLA_MIN_SPLIT`] candidates, at least one. `blocks` is the number of
/// (query, head group) blocks before splitting.
pub fn mla_splits(blocks: usize, max_candidates: usize, multiprocessors: usize) -> usize {
    let wanted = (2 * multiprocessors).div_ceil(blocks.max(1));
    let most = max_candidates.div_ceil(MLA_MIN_SPLIT).max(1);
    wanted.clamp(1, most)
}

/// The split-K decode launch (a block per query, head group and split; the group's queries in
/// dynamic shared memory) and its combine launch (a block per query head).
pub fn mla_decode(
    queries: usize,
    heads: usize,
    splits: usize,
    r: usize,
    p: usize,
) -> Result<(Launch, Launch), LaunchError> {
    let group = mla_group(heads);
    let shared = group * (r + p) * 4;
    if shared + MLA_STATIC_SHARED > SHARED_LIMIT || r > MLA_DIMS * MLA_THREADS as usize {
        return Err(LaunchError::SharedMemory {
            kernel: "mla_decode",
            bytes: shared + MLA_STATIC_SHARED,
            limit: SHARED_LIMIT,
        });
    }
    let query_heads = queries * heads;
    let decode = Launch {
        grid: (
            u32_of("query head groups", query_heads / group)?,
            u32_of("splits", splits)?,
            1,
        ),
        block: (MLA_THREADS, 1, 1),
        shared_bytes: shared as u32,
    };
    let combine = Launch {
        grid: (u32_of("query heads", query_heads)?, 1, 1),
        block: (r.next_multiple_of(32).clamp(32, 1024) as u32, 1, 1),
        shared_bytes: 0,
    };
    Ok((decode, combine))
}

/// Indexer scores: grid (queries, position tiles); the query's heads in shared memory.
pub fn indexer(queries: usize, len: usize, heads: usize, d: usize) -> Result<Launch, LaunchError> {
    let shared = (heads * d + heads) * 4;
    if shared > SHARED_LIMIT {
        return Err(LaunchError::SharedMemory {
            kernel: "indexer_scores",
            bytes: shared,
            limit: SHARED_LIMIT,
        });
    }
    Ok(Launch {
        grid: (
            u32_of("queries", queries)?,
            u32_of(
                "position tiles",
                len.div_ceil(ELEMENTWISE_THREADS as usize).max(1),
            )?,
            1,
        ),
        block: (ELEMENTWISE_THREADS, 1, 1),
        shared_bytes: shared as u32,
    })
}

/// The device addresses of a paged cache's blocks, checked to cover `rows` rows (the table a
/// kernel reads row `s` through).
pub fn block_table(blocks: &[u64], rows: usize) -> Result<Vec<u64>, LaunchError> {
    if blocks.len() < rows.div_ceil(KV_BLOCK) || blocks.contains(&0) {
        return Err(LaunchError::BlockTable {
            blocks: blocks.len(),
            rows,
        });
    }
    Ok(blocks.to_vec())
}

/// Top-k: one block of [`TOPK_THREADS`] per row.
pub fn topk(rows: usize, k: usize) -> Result<Launch, LaunchError> {
    if k == 0 {
        return Err(LaunchError::Invalid("top-k needs k >= 1".into()));
    }
    int("k", k)?;
    Ok(Launch {
        grid: (u32_of("rows", rows.max(1))?, 1, 1),
        block: (TOPK_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// The MoE gate: one thread per token; the kernel holds at most 256 experts and 64 groups.
pub fn moe_route(
    tokens: usize,
    experts: usize,
    groups: usize,
    topk_group: usize,
    top_k: usize,
) -> Result<Launch, LaunchError> {
    if experts > 256 || groups == 0 || groups > 64 || experts % groups != 0 {
        return Err(LaunchError::Invalid(format!(
            "moe_route supports up to 256 experts in up to 64 equal groups (got {experts} in {groups})"
        )));
    }
    if topk_group > groups || top_k > topk_group * (experts / groups) {
        return Err(LaunchError::Invalid(format!(
            "top_k {top_k} from {topk_group} of {groups} groups of {} experts is impossible",
            experts / groups
        )));
    }
    elementwise(tokens)
}

/// Candidate positions of DSA decode, flattened: query `t` attends to
/// `flat[offsets[t]..offsets[t + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub offsets: Vec<i32>,
    pub flat: Vec<i32>,
}

impl Candidates {
    /// Packs per-query selections; each must lie within the cache (`< len`).
    pub fn pack(selected: &[Vec<u32>], len: usize) -> Result<Self, LaunchError> {
        let mut offsets = Vec::with_capacity(selected.len() + 1);
        let mut flat = Vec::with_capacity(selected.iter().map(Vec::len).sum());
        offsets.push(0);
        for (t, s) in selected.iter().enumerate() {
            for &p in s {
                if p as usize >= len {
                    return Err(LaunchError::Invalid(format!(
                        "query {t} selects position {p} of a {len}-position cache"
                    )));
                }
                flat.push(int("position", p as usize)?);
            }
            offsets.push(int("candidates", flat.len())?);
        }
        Ok(Self { offsets, flat })
    }

    /// The longest candidate list.
    pub fn longest(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_covers_every_element_once() {
        for n in [0, 1, 255, 256, 257, 1 << 20] {
            let l = elementwise(n).unwrap();
            let threads = l.grid.0 as usize * l.block.0 as usize;
            assert!(threads >= n && threads < n.max(1) + 256, "{n}: {l:?}");
        }
        assert!(matches!(
            elementwise(usize::MAX),
            Err(LaunchError::TooLarge { .. })
        ));
    }

    #[test]
    fn block_tables_must_cover_every_row() {
        assert_eq!(block_table(&[8, 16], 128).unwrap(), vec![8, 16]);
        assert!(block_table(&[8, 16], 129).is_err());
        assert!(block_table(&[8, 0], 70).is_err());
        assert!(block_table(&[], 0).unwrap().is_empty());
        let common = include_str!("cu/common.cuh");
        assert!(common.contains(&format!("#define DSGW_KV_BLOCK {KV_BLOCK}\n")));
    }

    #[test]
    fn per_row_blocks_are_whole_warps() {
        assert_eq!(per_row(4, 7168).unwrap().block.0, 1024);
        assert_eq!(per_row(4, 100).unwrap().block.0, 128);
        assert_eq!(per_row(0, 1).unwrap().grid.0, 1);
    }

    #[test]
    fn mla_splits_fill_the_device_without_tiny_splits() {
        // One decode token, 128 heads on 132 SMs at 128K context: three splits per head.
        // One decode token, 8 groups of 16 heads on 132 SMs at 128K context: 33 splits.
        assert_eq!(mla_splits(8, 131_072, 132), 33);
        assert_eq!(mla_splits(128, 131_072, 132), 3);
        // Short contexts are not split below 256 candidates.
        assert_eq!(mla_splits(16, 300, 132), 2);
        assert_eq!(mla_splits(16, 10, 132), 1);
        // Many queries (prefill): no split needed.
        assert_eq!(mla_splits(8 * 4096, 4096, 132), 1);
    }

    #[test]
    fn mla_groups_divide_the_heads() {
        assert_eq!(mla_group(128), 16);
        assert_eq!(mla_group(8), 8);
        assert_eq!(mla_group(4), 4);
        assert_eq!(mla_group(24), 12);
        assert_eq!(mla_group(17), 1);
        assert_eq!(mla_group(1), 1);
        let mla = include_str!("cu/mla.cu");
        assert!(mla.contains(&format!("#define MLA_GROUP {MLA_GROUP}\n")));
        assert!(mla.contains(&format!("#define MLA_DIMS {MLA_DIMS}\n")));
        assert!(mla.contains("#define MLA_TILE 32\n"));
    }

    #[test]
    fn mla_shared_memory_fits_v32_shapes() {
        // One query, V3.2's 128 heads: 8 groups of 16, the group's queries in 36 KiB.
        let (decode, combine) = mla_decode(1, 128, 3, 512, 64).unwrap();
        assert_eq!(decode.shared_bytes as usize, 16 * (512 + 64) * 4);
        assert!(decode.shared_bytes as usize + MLA_STATIC_SHARED <= SHARED_LIMIT);
        assert_eq!(decode.grid, (8, 3, 1));
        assert_eq!(combine.grid, (128, 1, 1));
        assert_eq!(combine.block.0, 512);
        // A latent wider than the threads cover, or queries that overflow shared memory.
        assert!(mla_decode(1, 16, 1, 1024, 64).is_err());
        assert!(mla_decode(1, 16, 1, 512, 512).is_err());
    }

    #[test]
    fn indexer_fits_v32_and_refuses_what_does_not() {
        // V3.2: 64 indexer heads of 128.
        let l = indexer(2, 1000, 64, 128).unwrap();
        assert_eq!(l.grid, (2, 4, 1));
        assert_eq!(l.shared_bytes, (64 * 128 + 64) * 4);
        assert!(matches!(
            indexer(1, 10, 128, 128),
            Err(LaunchError::SharedMemory { .. })
        ));
    }

    #[test]
    fn moe_route_checks_the_gate_shape() {
        assert!(moe_route(7, 256, 8, 4, 8).is_ok());
        assert!(moe_route(7, 512, 8, 4, 8).is_err());
        assert!(moe_route(7, 256, 8, 1, 64).is_err());
        assert!(moe_route(7, 256, 7, 4, 8).is_err());
    }

    #[test]
    fn candidates_pack_flat_with_offsets() {
        let c = Candidates::pack(&[vec![0, 5, 9], vec![], vec![3]], 10).unwrap();
        assert_eq!(c.offsets, vec![0, 3, 3, 4]);
        assert_eq!(c.flat, vec![0, 5, 9, 3]);
        assert_eq!(c.longest(), 3);
        assert!(Candidates::pack(&[vec![10]], 10).is_err());
    }

    #[test]
    fn integer_arguments_are_checked() {
        assert_eq!(ints("positions", &[0, 7]).unwrap(), vec![0, 7]);
        assert!(ints("positions", &[1 << 40]).is_err());
        assert!(topk(3, 0).is_err());
    }
}
