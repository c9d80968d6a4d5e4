// The prior of eq. (11), lam_s TV_s + lam_t TV_t (eq. 12 and 13), and its gradient in one pass
// over the volume (loss.spatial_tv and loss.temporal_tv compute the same with ~25 torch ops
// forward and as many backward).
//
// volume (P, R, C); inside, pair_p (P-1, R, C), pair_r (P, R-1, C), pair_c (P, R, C-1): the
// float masks of loss.MaskGeometry; index (V,): flat indices of the voxels inside; previous
// (K, V) and weights (K,): the temporal window. Writes d(prior)/d(volume) into grad (P, R, C)
// and returns the prior. Sums run in double, voxels in C order: deterministic.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" {

double eitmon_tv_prior(int P, int R, int C, const float* x, const float* inside,
                       const float* pair_p, const float* pair_r, const float* pair_c,
                       int64_t V, const int64_t* index, int K, const float* previous,
                       const float* weights, float eps, float lam_s, float lam_t, float* grad) {
    std::memset(grad, 0, sizeof(float) * (size_t)P * R * C);
    const size_t sp = (size_t)R * C, sr = C;
    const float cs = lam_s / (float)V;
    double spatial = 0.0;
    for (int p = 0; p < P; ++p)
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < C; ++c) {
                const size_t u = p * sp + r * sr + c;
                if (inside[u] == 0.0f) continue;
                const float dp = p + 1 < P ? (x[u + sp] - x[u]) * pair_p[u] : 0.0f;
                const float dr = r + 1 < R ? (x[u + sr] - x[u]) * pair_r[(p * (R - 1) + r) * sr + c] : 0.0f;
                const float dc = c + 1 < C ? (x[u + 1] - x[u]) * pair_c[(p * R + r) * (C - 1) + c] : 0.0f;
                const float t = std::sqrt(dp * dp + dr * dr + dc * dc + eps);
                spatial += t;
                const float k = cs / t;  // d t / d d* = d* / t
                grad[u] -= k * (dp + dr + dc);
                if (dp != 0.0f) grad[u + sp] += k * dp;
                if (dr != 0.0f) grad[u + sr] += k * dr;
                if (dc != 0.0f) grad[u + 1] += k * dc;
            }
    double temporal = 0.0;
    for (int j = 0; j < K; ++j) {
        if (weights[j] == 0.0f) continue;  // empty slots of the window
        const float* prev = previous + (size_t)j * V;
        const float ct = lam_t * weights[j] / (float)V;
        double sum = 0.0;
        for (int64_t v = 0; v < V; ++v) {
            const float d = x[index[v]] - prev[v];
            const float t = std::sqrt(d * d + eps);
            sum += t;
            grad[index[v]] += ct * d / t;
        }
        temporal += (double)weights[j] * sum / (double)V;
    }
    return (double)lam_s * spatial / (double)V + (double)lam_t * temporal;
}

}  // extern "C"
