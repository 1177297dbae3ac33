// MLA decode attention over the latent cache, in the absorbed form: one 576-d key per position
// (512-d latent + 64-d rope key) shared by every head, the 512-d latent as the value. Split-K:
// block (query-head, split) scores its share of the candidate positions tile by tile with an
// online softmax and writes a partial (max, sum, weighted latent); mla_combine merges the
// splits. Candidates are 0..=position (dense causal) or a per-query list (DSA's top-k). The
// cache is paged: latent and rope-key rows are read through tables of block pointers.

#define MLA_TILE 64

extern "C" __global__ void mla_decode(
    const float* __restrict__ q_lat, const float* __restrict__ q_pe,
    const float* const* __restrict__ c_blocks, const float* const* __restrict__ kpe_blocks,
    const int* __restrict__ positions, const int* __restrict__ cand_offsets,
    const int* __restrict__ cand, int sparse,
    int heads, int r, int p, float scale, int splits,
    float* __restrict__ part_max, float* __restrict__ part_sum, float* __restrict__ part_acc) {
    extern __shared__ float smem[];
    float* q = smem;                     // r + p
    float* scores = q + r + p;           // MLA_TILE
    float* acc = scores + MLA_TILE;      // r
    __shared__ const float* tile_c[MLA_TILE];
    __shared__ const float* tile_kpe[MLA_TILE];
    __shared__ float scratch[32];

    const int qh = blockIdx.x;           // query * heads + head
    const int t = qh / heads;
    const int split = blockIdx.y;
    const int count = sparse ? cand_offsets[t + 1] - cand_offsets[t] : positions[t] + 1;
    const int chunk = (count + splits - 1) / splits;
    const int begin = min(count, split * chunk), end = min(count, begin + chunk);

    for (int i = threadIdx.x; i < r; i += blockDim.x) {
        q[i] = q_lat[(size_t)qh * r + i];
        acc[i] = 0.0f;
    }
    for (int i = threadIdx.x; i < p; i += blockDim.x) q[r + i] = q_pe[(size_t)qh * p + i];
    __syncthreads();

    const int lane = threadIdx.x % DSGW_WARP, warp = threadIdx.x / DSGW_WARP;
    const int warps = blockDim.x / DSGW_WARP;
    float m = -INFINITY, l = 0.0f;
    for (int base = begin; base < end; base += MLA_TILE) {
        const int n = min(MLA_TILE, end - base);
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const int s = sparse ? cand[cand_offsets[t] + base + j] : base + j;
            tile_c[j] = dsgw_row(c_blocks, s, r);
            tile_kpe[j] = dsgw_row(kpe_blocks, s, p);
        }
        __syncthreads();
        for (int j = warp; j < n; j += warps) {
            const float* cs = tile_c[j];
            const float* ps = tile_kpe[j];
            float dot = 0.0f;
            for (int i = lane; i < r; i += DSGW_WARP) dot += q[i] * cs[i];
            for (int i = lane; i < p; i += DSGW_WARP) dot += q[r + i] * ps[i];
            dot = dsgw_warp_sum(dot);
            if (lane == 0) scores[j] = dot * scale;
        }
        __syncthreads();
        const float tile_max = dsgw_block_max(threadIdx.x < n ? scores[threadIdx.x] : -INFINITY, scratch);
        const float m_new = fmaxf(m, tile_max);
        const float correction = expf(m - m_new);
        __syncthreads();
        for (int j = threadIdx.x; j < n; j += blockDim.x) scores[j] = expf(scores[j] - m_new);
        __syncthreads();
        float tile_sum = 0.0f;
        for (int j = threadIdx.x; j < n; j += blockDim.x) tile_sum += scores[j];
        l = l * correction + dsgw_block_sum(tile_sum, scratch);
        for (int i = threadIdx.x; i < r; i += blockDim.x) {
            float a = acc[i] * correction;
            for (int j = 0; j < n; ++j) a += scores[j] * tile_c[j][i];
            acc[i] = a;
        }
        m = m_new;
        __syncthreads();
    }
    const size_t part = (size_t)qh * splits + split;
    if (threadIdx.x == 0) {
        part_max[part] = m;
        part_sum[part] = l;
    }
    for (int i = threadIdx.x; i < r; i += blockDim.x) part_acc[part * r + i] = acc[i];
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
