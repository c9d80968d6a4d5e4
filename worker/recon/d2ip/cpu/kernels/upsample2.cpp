// x2 trilinear upsampling of a channels-last (P, R, C, ch) tensor, align_corners=False, cropped
// to (mP, mR, mC) with m = 2n or 2n - 1 per axis: PyTorch's
// F.interpolate(scale_factor=2, mode="trilinear") followed by a crop, and its backward.
//
// Per axis, output o reads source position o / 2 - 1/4 (clamped at the ends):
//     out[2i] = 3/4 x[i] + 1/4 x[max(i - 1, 0)],  out[2i + 1] = 3/4 x[i] + 1/4 x[min(i + 1, n - 1)].
// Trilinear = this 1D operator along C, then R, then P; the backward applies the transposed
// operators in the reverse order. Each pass is vectorised over the contiguous inner block.

#include <cstddef>
#include <vector>

namespace {

// One axis: in (A, n, B) -> out (A, m, B).
void up_axis(const float* in, float* out, size_t A, int n, int m, size_t B) {
    for (size_t a = 0; a < A; ++a) {
        const float* src = in + a * n * B;
        float* dst = out + a * m * B;
        for (int o = 0; o < m; ++o) {
            const int i = o / 2;
            const int j = (o % 2 == 0) ? (i > 0 ? i - 1 : 0) : (i + 1 < n ? i + 1 : n - 1);
            const float* xi = src + i * B;
            const float* xj = src + j * B;
            float* y = dst + o * B;
            for (size_t b = 0; b < B; ++b) y[b] = 0.75f * xi[b] + 0.25f * xj[b];
        }
    }
}

// Transpose of `up_axis`: gout (A, m, B) -> gin (A, n, B).
void up_axis_t(const float* gout, float* gin, size_t A, int n, int m, size_t B) {
    for (size_t a = 0; a < A; ++a) {
        const float* g = gout + a * m * B;
        float* dst = gin + a * n * B;
        for (size_t t = 0; t < (size_t)n * B; ++t) dst[t] = 0.0f;
        for (int o = 0; o < m; ++o) {
            const int i = o / 2;
            const int j = (o % 2 == 0) ? (i > 0 ? i - 1 : 0) : (i + 1 < n ? i + 1 : n - 1);
            const float* go = g + o * B;
            float* gi = dst + i * B;
            float* gj = dst + j * B;
            for (size_t b = 0; b < B; ++b) gi[b] += 0.75f * go[b];
            for (size_t b = 0; b < B; ++b) gj[b] += 0.25f * go[b];
        }
    }
}

}  // namespace

extern "C" {

void eitmon_upsample2_forward(int P, int R, int C, int ch, int mP, int mR, int mC,
                              const float* x, float* out) {
    std::vector<float> t1((size_t)P * R * mC * ch), t2((size_t)P * mR * mC * ch);
    up_axis(x, t1.data(), (size_t)P * R, C, mC, ch);
    up_axis(t1.data(), t2.data(), P, R, mR, (size_t)mC * ch);
    up_axis(t2.data(), out, 1, P, mP, (size_t)mR * mC * ch);
}

void eitmon_upsample2_backward(int P, int R, int C, int ch, int mP, int mR, int mC,
                               const float* gout, float* gx) {
    std::vector<float> t2((size_t)P * mR * mC * ch), t1((size_t)P * R * mC * ch);
    up_axis_t(gout, t2.data(), 1, P, mP, (size_t)mR * mC * ch);
    up_axis_t(t2.data(), t1.data(), P, R, mR, (size_t)mC * ch);
    up_axis_t(t1.data(), gx, (size_t)P * R, C, mC, ch);
}

}  // extern "C"
