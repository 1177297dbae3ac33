// The lightning indexer's scores: for query t and cached position s <= positions[t],
// sum_h w[t,h] * relu(q[t,h] . k[s]) * scale; -inf after the query's position.
// Grid (queries, ceil(len / blockDim)); the query's heads and weights sit in shared memory. The
// keys are paged: row s is read through the table of block pointers.

extern "C" __global__ void indexer_scores(const float* __restrict__ q, const float* __restrict__ w,
                                          const float* const* __restrict__ k_blocks,
                                          const int* __restrict__ positions,
                                          int heads, int d, int len, float scale, float* __restrict__ out) {
    extern __shared__ float smem[];
    float* qs = smem;             // heads * d
    float* ws = qs + heads * d;   // heads
    const int t = blockIdx.x;
    for (int i = threadIdx.x; i < heads * d; i += blockDim.x) qs[i] = q[(size_t)t * heads * d + i];
    for (int i = threadIdx.x; i < heads; i += blockDim.x) ws[i] = w[(size_t)t * heads + i];
    __syncthreads();
    const int s = blockIdx.y * blockDim.x + threadIdx.x;
    if (s >= len) return;
    if (s > positions[t]) {
        out[(size_t)t * len + s] = -INFINITY;
        return;
    }
    const float* ks = dsgw_row(k_blocks, s, d);
    float total = 0.0f;
    for (int h = 0; h < heads; ++h) {
        float dot = 0.0f;
        for (int i = 0; i < d; ++i) dot += qs[h * d + i] * ks[i];
        total += ws[h] * fmaxf(dot, 0.0f);
    }
    out[(size_t)t * len + s] = total * scale;
}
