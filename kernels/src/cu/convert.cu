// bfloat16 weights and counter-based random fills. bf16 values travel as their 16 bits
// (unsigned short): the conversion is the few bit operations below, so no CUDA header is needed
// and NVRTC from PyPI compiles it as it is.

// Round to nearest, ties to even (what the host's `half::bf16::from_f32` does); NaN stays NaN.
__device__ __forceinline__ unsigned short dsgw_to_bf16(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// Activations for a bf16 GEMM (cuBLAS takes both operands in one type).
extern "C" __global__ void to_bf16(const float* __restrict__ x, unsigned short* __restrict__ out,
                                   long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = dsgw_to_bf16(x[i]);
}

// SplitMix64's finaliser of the k-th state after `seed`: `mix_at` in engine/src/tiny.rs, bit
// for bit, so the CPU and the GPU draw the same uniforms. The normals made from them agree to a
// few ulp: CUDA's logf / cosf and its fused multiply-adds round differently from the host's.
__device__ __forceinline__ unsigned long long dsgw_mix_at(unsigned long long seed, unsigned long long k) {
    unsigned long long z = seed + k * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The i-th standard normal of stream `seed` (`normal_at` in engine/src/tiny.rs).
__device__ __forceinline__ float dsgw_normal_at(unsigned long long seed, unsigned long long i) {
    const float u = ((float)(dsgw_mix_at(seed, 2 * i + 1) >> 40) + 0.5f) / 16777216.0f;
    const float v = ((float)(dsgw_mix_at(seed, 2 * i + 2) >> 40) + 0.5f) / 16777216.0f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.28318530717958647692f * v);
}

extern "C" __global__ void fill_normal(float* __restrict__ out, long long n, unsigned long long seed,
                                       float mean, float stddev) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = mean + stddev * dsgw_normal_at(seed, (unsigned long long)i);
}

extern "C" __global__ void fill_normal_bf16(unsigned short* __restrict__ out, long long n,
                                            unsigned long long seed, float stddev) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = dsgw_to_bf16(stddev * dsgw_normal_at(seed, (unsigned long long)i));
}
