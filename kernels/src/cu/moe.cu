// DeepSeek-V3's MoE gate for each token (one thread per token): sigmoid scores, the correction
// bias for selection only, group-limited top-k (groups ranked by the sum of their two best
// biased scores), weights from the unbiased scores, normalised if asked, then scaled. Ties go
// to the lower index, as on the CPU. At most 256 experts.

#define MOE_MAX_EXPERTS 256

extern "C" __global__ void moe_route(const float* __restrict__ logits, const float* __restrict__ bias,
                                     int tokens, int experts, int groups, int topk_group, int top_k,
                                     int normalize, float scaling,
                                     int* __restrict__ out_idx, float* __restrict__ out_weight) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens || experts > MOE_MAX_EXPERTS) return;
    float biased[MOE_MAX_EXPERTS];
    bool allowed[MOE_MAX_EXPERTS];
    const float* row = logits + (size_t)t * experts;
    for (int e = 0; e < experts; ++e) {
        biased[e] = 1.0f / (1.0f + expf(-row[e])) + bias[e];
        allowed[e] = false;
    }
    const int per_group = experts / groups;
    unsigned long long taken_groups = 0ull;
    for (int pick = 0; pick < topk_group; ++pick) {
        int best = -1;
        float best_score = -INFINITY;
        for (int g = 0; g < groups; ++g) {
            if (taken_groups & (1ull << g)) continue;
            float first = -INFINITY, second = -INFINITY;
            for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
                if (biased[e] > first) {
                    second = first;
                    first = biased[e];
                } else if (biased[e] > second) {
                    second = biased[e];
                }
            }
            const float score = per_group > 1 ? first + second : first;
            if (best < 0 || score > best_score) {
                best = g;
                best_score = score;
            }
        }
        taken_groups |= 1ull << best;
        for (int e = best * per_group; e < (best + 1) * per_group; ++e) allowed[e] = true;
    }
    float sum = 0.0f;
    for (int pick = 0; pick < top_k; ++pick) {
        int best = -1;
        for (int e = 0; e < experts; ++e)
            if (allowed[e] && (best < 0 || biased[e] > biased[best])) best = e;
        allowed[best] = false;
        const float weight = 1.0f / (1.0f + expf(-row[best]));
        out_idx[(size_t)t * top_k + pick] = best;
        out_weight[(size_t)t * top_k + pick] = weight;
        sum += weight;
    }
    const float norm = normalize ? 1.0f / (sum + 1e-20f) : 1.0f;
    for (int pick = 0; pick < top_k; ++pick) out_weight[(size_t)t * top_k + pick] *= norm * scaling;
}
