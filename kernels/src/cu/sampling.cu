// Sampling helpers, one block per row of logits: the greedy choice, and the softmax at a
// temperature (probabilities in place) that temperature / nucleus sampling draws from.

extern "C" __global__ void __launch_bounds__(1024) argmax(const float* __restrict__ logits, int vocab, int* __restrict__ out) {
    __shared__ float best_value[1024];
    __shared__ int best_index[1024];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    float v = -INFINITY;
    int at = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        if (row[i] > v) {
            v = row[i];
            at = i;
        }
    best_value[threadIdx.x] = v;
    best_index[threadIdx.x] = at;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const float ov = best_value[threadIdx.x + stride];
            const int oi = best_index[threadIdx.x + stride];
            if (ov > best_value[threadIdx.x] || (ov == best_value[threadIdx.x] && oi < best_index[threadIdx.x])) {
                best_value[threadIdx.x] = ov;
                best_index[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = best_index[0];
}

extern "C" __global__ void __launch_bounds__(1024) softmax_temperature(float* __restrict__ logits, int vocab, float temperature) {
    __shared__ float scratch[32];
    float* row = logits + (size_t)blockIdx.x * vocab;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, row[i]);
    m = dsgw_block_max(m, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float e = expf((row[i] - m) / temperature);
        row[i] = e;
        s += e;
    }
    const float inv = 1.0f / dsgw_block_sum(s, scratch);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) row[i] *= inv;
}
