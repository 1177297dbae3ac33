// YaRN rotary embedding, in place, on the first `rope_dim` values of every head of every row.
// One thread per (row, head, pair). `half_split` 0: pairs (2i, 2i+1) (MLA); 1: (i, i + half)
// (the indexer). cos/sin are (max_position, rope_dim / 2).

extern "C" __global__ void rope(float* __restrict__ x, const int* __restrict__ positions,
                                const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                int rows, int heads, int head_dim, int rope_dim, int half_split) {
    const int half = rope_dim / 2;
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)rows * heads * half) return;
    const int i = (int)(id % half);
    const int head = (int)((id / half) % heads);
    const int row = (int)(id / ((long long)half * heads));
    float* h = x + ((size_t)row * heads + head) * head_dim;
    const int a = half_split ? i : 2 * i;
    const int b = half_split ? i + half : 2 * i + 1;
    const size_t at = (size_t)positions[row] * half + i;
    const float c = cos_table[at], s = sin_table[at];
    const float x0 = h[a], x1 = h[b];
    h[a] = x0 * c - x1 * s;
    h[b] = x0 * s + x1 * c;
}
