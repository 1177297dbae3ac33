// Shared by every kernel source (prepended before compilation; NVRTC sees one translation unit).
// Blocks are at most 1024 threads and a multiple of 32.
#define DSGW_WARP 32
// NVRTC compiles without the host headers that define it.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// Rows per KV-cache block (launch::KV_BLOCK): cached row s is row s % DSGW_KV_BLOCK of block
// s / DSGW_KV_BLOCK, found through a table of block pointers.
#define DSGW_KV_BLOCK 64

__device__ __forceinline__ const float* dsgw_row(const float* const* blocks, long long s, int width) {
    return blocks[s / DSGW_KV_BLOCK] + (s % DSGW_KV_BLOCK) * (long long)width;
}

__device__ __forceinline__ float dsgw_warp_sum(float v) {
    for (int o = DSGW_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float dsgw_warp_max(float v) {
    for (int o = DSGW_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum; every thread gets the result. `scratch` holds at least 32 floats.
__device__ __forceinline__ float dsgw_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % DSGW_WARP, warp = threadIdx.x / DSGW_WARP;
    v = dsgw_warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + DSGW_WARP - 1) / DSGW_WARP;
    v = threadIdx.x < warps ? scratch[threadIdx.x] : 0.0f;
    if (warp == 0) v = dsgw_warp_sum(v);
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    return scratch[0];
}

// Block-wide max; every thread gets the result.
__device__ __forceinline__ float dsgw_block_max(float v, float* scratch) {
    const int lane = threadIdx.x % DSGW_WARP, warp = threadIdx.x / DSGW_WARP;
    v = dsgw_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + DSGW_WARP - 1) / DSGW_WARP;
    v = threadIdx.x < warps ? scratch[threadIdx.x] : -INFINITY;
    if (warp == 0) v = dsgw_warp_max(v);
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    return scratch[0];
}
