// Element-wise and row-moving kernels: SwiGLU, residual adds, the MoE expert dispatch
// (gather) and combine (scatter-add), embeddings, and column slicing / concatenation.
// One thread per output element.

extern "C" __global__ void silu_mul(const float* __restrict__ gate, const float* __restrict__ up,
                                    float* __restrict__ out, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}

extern "C" __global__ void add_assign(float* __restrict__ x, const float* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// out[rows[i]] += scale[i] * y[i]: several experts write the same token, hence the atomics.
extern "C" __global__ void scatter_add_rows(float* __restrict__ out, const float* __restrict__ y,
                                            const int* __restrict__ rows, const float* __restrict__ scale,
                                            int n, int dim) {
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)n * dim) return;
    const int i = (int)(id / dim), d = (int)(id % dim);
    atomicAdd(out + (size_t)rows[i] * dim + d, scale[i] * y[id]);
}

// out[i] = x[rows[i]]: the expert dispatch, and embedding lookups (rows = token ids).
extern "C" __global__ void gather_rows(const float* __restrict__ x, const int* __restrict__ rows,
                                       float* __restrict__ out, int n, int dim) {
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)n * dim) return;
    const int i = (int)(id / dim), d = (int)(id % dim);
    out[id] = x[(size_t)rows[i] * dim + d];
}

// Columns [start, start + len) of each of `groups` blocks of `cols / groups` in every row.
extern "C" __global__ void slice_cols(const float* __restrict__ x, float* __restrict__ out,
                                      int rows, int cols, int groups, int start, int len) {
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long width = (long long)groups * len;
    if (id >= (long long)rows * width) return;
    const int row = (int)(id / width);
    const int g = (int)((id % width) / len), j = (int)(id % len);
    out[id] = x[(size_t)row * cols + (size_t)g * (cols / groups) + start + j];
}

extern "C" __global__ void concat_cols(const float* __restrict__ a, int ca, const float* __restrict__ b,
                                       int cb, float* __restrict__ out, int rows) {
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int width = ca + cb;
    if (id >= (long long)rows * width) return;
    const int row = (int)(id / width), j = (int)(id % width);
    out[id] = j < ca ? a[(size_t)row * ca + j] : b[(size_t)row * cb + (j - ca)];
}
