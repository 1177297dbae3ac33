// Per row of scores (n, len): the indices of the k largest finite values, ascending, ties to the
// lower index (as the CPU backend). One block of 1024 threads per row: a radix select finds the
// k-th largest value bit by bit on an order-preserving integer key, then each thread writes the
// chosen indices of its contiguous chunk at its scanned offset.

#define TOPK_THREADS 1024

__device__ __forceinline__ unsigned int topk_key(float f) {
    const unsigned int u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ int topk_block_count(int v, int* scratch) {
    // Sum of one int per thread (exact: counts stay below 2^31).
    __syncthreads();
    scratch[threadIdx.x] = v;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
        __syncthreads();
    }
    const int total = scratch[0];
    __syncthreads();
    return total;
}

extern "C" __global__ void __launch_bounds__(1024) topk(const float* __restrict__ scores, int len, int k,
                                int* __restrict__ out_idx, int* __restrict__ out_count) {
    __shared__ int counts[TOPK_THREADS];
    __shared__ int gt_offsets[TOPK_THREADS];
    __shared__ int eq_offsets[TOPK_THREADS];
    const float* row = scores + (size_t)blockIdx.x * len;
    const int chunk = (len + blockDim.x - 1) / blockDim.x;
    const int lo = min(len, threadIdx.x * chunk), hi = min(len, lo + chunk);

    int finite = 0;
    for (int i = lo; i < hi; ++i) finite += isfinite(row[i]) ? 1 : 0;
    const int total_finite = topk_block_count(finite, counts);
    const int want = min(k, total_finite);

    // Key of the want-th largest finite value (0 selects every finite value).
    unsigned int threshold = 0;
    if (total_finite > k) {
        for (int bit = 31; bit >= 0; --bit) {
            const unsigned int candidate = threshold | (1u << bit);
            int c = 0;
            for (int i = lo; i < hi; ++i)
                c += (isfinite(row[i]) && topk_key(row[i]) >= candidate) ? 1 : 0;
            if (topk_block_count(c, counts) >= k) threshold = candidate;
        }
    }
    int gt = 0, eq = 0;
    for (int i = lo; i < hi; ++i) {
        if (!isfinite(row[i])) continue;
        const unsigned int key = topk_key(row[i]);
        gt += key > threshold ? 1 : 0;
        eq += (threshold != 0 && key == threshold) ? 1 : 0;
    }
    gt_offsets[threadIdx.x] = gt;
    eq_offsets[threadIdx.x] = eq;
    __syncthreads();
    if (threadIdx.x == 0) {
        int g = 0, e = 0;
        for (int i = 0; i < blockDim.x; ++i) {
            const int gi = gt_offsets[i], ei = eq_offsets[i];
            gt_offsets[i] = g;
            eq_offsets[i] = e;
            g += gi;
            e += ei;
        }
        counts[0] = g;  // values strictly above the threshold
    }
    __syncthreads();
    const int need_eq = want - counts[0];
    // This thread's share: its values above the threshold, then ties in index order.
    const int my_eq_taken = max(0, min(eq, need_eq - eq_offsets[threadIdx.x]));
    __syncthreads();
    counts[threadIdx.x] = gt + my_eq_taken;
    __syncthreads();
    if (threadIdx.x == 0) {
        int o = 0;
        for (int i = 0; i < blockDim.x; ++i) {
            const int ci = counts[i];
            counts[i] = o;
            o += ci;
        }
    }
    __syncthreads();
    int at = counts[threadIdx.x];
    int eq_seen = eq_offsets[threadIdx.x];
    int* out = out_idx + (size_t)blockIdx.x * k;
    for (int i = lo; i < hi; ++i) {
        if (!isfinite(row[i])) continue;
        const unsigned int key = topk_key(row[i]);
        bool take = key > threshold;
        if (threshold != 0 && key == threshold) {
            take = eq_seen < need_eq;
            ++eq_seen;
        }
        if (take) out[at++] = i;
    }
    if (threadIdx.x == 0) out_count[blockIdx.x] = want;
}
