// MLA decode attention over the latent cache, in the absorbed form: one 576-d key per position
// (512-d latent + 64-d rope key) shared by every head, the 512-d latent as the value. A block
// takes a group of up to MLA_GROUP heads of one query, so each cached row is read once for the
// whole group rather than once per head (decode is bound by reading the cache). Split-K: block
// (query, head group, split) scores its share of the candidate positions tile by tile with an
// online softmax per head and writes a partial (max, sum, weighted latent) per head;
// mla_combine merges the splits. Candidates are 0..=position (dense causal) or a per-query list
// (DSA's top-k). The cache is paged: rows are read through tables of block pointers.

#define MLA_GROUP 16
#define MLA_TILE 32
// Latent dims a thread accumulates (r <= MLA_DIMS * blockDim.x).
#define MLA_DIMS 2

extern "C" __global__ void mla_decode(
    const float* __restrict__ q_lat, const float* __restrict__ q_pe,
    const float* const* __restrict__ c_blocks, const float* const* __restrict__ kpe_blocks,
    const int* __restrict__ positions, const int* __restrict__ cand_offsets,
    const int* __restrict__ cand, int sparse,
    int heads, int group, int r, int p, float scale, int splits,
    float* __restrict__ part_max, float* __restrict__ part_sum, float* __restrict__ part_acc) {
    extern __shared__ float q[];        // group * (r + p): the group's queries, latent then rope
    __shared__ float scores[MLA_GROUP][MLA_TILE];
    __shared__ float run_max[MLA_GROUP], run_sum[MLA_GROUP], correction[MLA_GROUP];
    __shared__ const float* tile_c[MLA_TILE];
    __shared__ const float* tile_kpe[MLA_TILE];

    const int width = r + p;
    const int groups = heads / group;
    const int t = blockIdx.x / groups;
    const size_t qh0 = (size_t)t * heads + (size_t)(blockIdx.x % groups) * group;
    const int split = blockIdx.y;
    const int count = sparse ? cand_offsets[t + 1] - cand_offsets[t] : positions[t] + 1;
    const int chunk = (count + splits - 1) / splits;
    const int begin = min(count, split * chunk), end = min(count, begin + chunk);

    for (int i = threadIdx.x; i < group * width; i += blockDim.x) {
        const int h = i / width, k = i % width;
        q[i] = k < r ? q_lat[(qh0 + h) * r + k] : q_pe[(qh0 + h) * p + (k - r)];
    }
    if (threadIdx.x < MLA_GROUP) {
        run_max[threadIdx.x] = -INFINITY;
        run_sum[threadIdx.x] = 0.0f;
        correction[threadIdx.x] = 1.0f;
    }
    float acc[MLA_GROUP][MLA_DIMS];
#pragma unroll
    for (int h = 0; h < MLA_GROUP; ++h)
#pragma unroll
        for (int k = 0; k < MLA_DIMS; ++k) acc[h][k] = 0.0f;
    __syncthreads();

    const int lane = threadIdx.x % DSGW_WARP, warp = threadIdx.x / DSGW_WARP;
    const int warps = blockDim.x / DSGW_WARP;
    for (int base = begin; base < end; base += MLA_TILE) {
        const int n = min(MLA_TILE, end - base);
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const int s = sparse ? cand[cand_offsets[t] + base + j] : base + j;
            tile_c[j] = dsgw_row(c_blocks, s, r);
            tile_kpe[j] = dsgw_row(kpe_blocks, s, p);
        }
        __syncthreads();
        // Scores: a warp per position; one read of the row serves every head of the group.
        for (int j = warp; j < n; j += warps) {
            float dot[MLA_GROUP];
#pragma unroll
            for (int h = 0; h < MLA_GROUP; ++h) dot[h] = 0.0f;
            for (int i = lane; i < width; i += DSGW_WARP) {
                const float v = i < r ? tile_c[j][i] : tile_kpe[j][i - r];
#pragma unroll
                for (int h = 0; h < MLA_GROUP; ++h)
                    if (h < group) dot[h] += q[h * width + i] * v;
            }
#pragma unroll
            for (int h = 0; h < MLA_GROUP; ++h) {
                const float total = dsgw_warp_sum(dot[h]);  // every lane takes part
                if (lane == 0 && h < group) scores[h][j] = total * scale;
            }
        }
        __syncthreads();
        // Online softmax: a warp per head, a lane per position of the tile.
        for (int h = warp; h < group; h += warps) {
            const float s = lane < n ? scores[h][lane] : -INFINITY;
            const float m_new = fmaxf(run_max[h], dsgw_warp_max(s));
            const float e = lane < n ? expf(s - m_new) : 0.0f;
            const float total = dsgw_warp_sum(e);
            if (lane < n) scores[h][lane] = e;
            if (lane == 0) {
                correction[h] = expf(run_max[h] - m_new);
                run_sum[h] = run_sum[h] * correction[h] + total;
                run_max[h] = m_new;
            }
        }
        __syncthreads();
        // Weighted latent: each thread its dims, every head, one read of each row's value.
#pragma unroll
        for (int k = 0; k < MLA_DIMS; ++k) {
            const int d = threadIdx.x + k * blockDim.x;
            if (d < r) {
                float a[MLA_GROUP];
#pragma unroll
                for (int h = 0; h < MLA_GROUP; ++h) a[h] = h < group ? acc[h][k] * correction[h] : 0.0f;
                for (int j = 0; j < n; ++j) {
                    const float v = tile_c[j][d];
#pragma unroll
                    for (int h = 0; h < MLA_GROUP; ++h)
                        if (h < group) a[h] += scores[h][j] * v;
                }
#pragma unroll
                for (int h = 0; h < MLA_GROUP; ++h) acc[h][k] = a[h];
            }
        }
        __syncthreads();
    }
    if (threadIdx.x < group) {
        const size_t part = (qh0 + threadIdx.x) * splits + split;
        part_max[part] = run_max[threadIdx.x];
        part_sum[part] = run_sum[threadIdx.x];
    }
#pragma unroll
    for (int k = 0; k < MLA_DIMS; ++k) {
        const int d = threadIdx.x + k * blockDim.x;
        if (d < r) {
#pragma unroll
            for (int h = 0; h < MLA_GROUP; ++h)
                if (h < group) part_acc[((qh0 + h) * splits + split) * r + d] = acc[h][k];
        }
    }
}

// Merges the splits of each query-head: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
extern "C" __global__ void mla_combine(const float* __restrict__ part_max, const float* __restrict__ part_sum,
                                       const float* __restrict__ part_acc, int r, int splits,
                                       float* __restrict__ out) {
    const int qh = blockIdx.x;
    const float* pm = part_max + (size_t)qh * splits;
    const float* ps = part_sum + (size_t)qh * splits;
    float big = -INFINITY;
    for (int s = 0; s < splits; ++s) big = fmaxf(big, pm[s]);
    float total = 0.0f;
    for (int s = 0; s < splits; ++s) total += pm[s] == -INFINITY ? 0.0f : ps[s] * expf(pm[s] - big);
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    for (int i = threadIdx.x; i < r; i += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; ++s)
            if (pm[s] != -INFINITY) v += part_acc[((size_t)qh * splits + s) * r + i] * expf(pm[s] - big);
        out[(size_t)qh * r + i] = v * inv;
    }
}
