// 2x2x2 max pooling, stride 2, ceil mode, of a channels-last (P, R, C, ch) tensor to
// (ceil(P/2), ceil(R/2), ceil(C/2), ch), and its backward: ops_cl.max_pool2 (ATen's
// max_pool3d(2, ceil_mode=True)) without the layout copies around it. As ATen: the first
// maximum in (p, r, c) order wins and a NaN wins over numbers. Output planes run in parallel on
// the pool of pool.h; the windows do not overlap, so the backward writes each input once.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "pool.h"

namespace {

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

// One window, channels [k0, k0 + 8): the maximum and where it is, eight channels at a time.
inline void window8(const float* x, int ch, const int32_t* voxels, int n, float* out,
                    int32_t* arg) {
    v8 best;
    i8 at;
    for (int l = 0; l < 8; ++l) {
        best[l] = -std::numeric_limits<float>::infinity();
        at[l] = voxels[0];
    }
    for (int t = 0; t < n; ++t) {
        v8 v;
        std::memcpy(&v, x + (size_t)voxels[t] * ch, sizeof v);
        const i8 take = (v > best) | (v != v);  // v != v: NaN
        best = take ? v : best;
        at = take ? i8{} + voxels[t] : at;
    }
    std::memcpy(out, &best, sizeof best);
    std::memcpy(arg, &at, sizeof at);
}

}  // namespace

extern "C" {

void eitmon_maxpool2_forward(int P, int R, int C, int ch, const float* x, float* out,
                             int32_t* arg) {
    const int oR = (R + 1) / 2, oC = (C + 1) / 2;
    eitmon::parallel_for((P + 1) / 2, [&](int op) {
        int32_t voxels[8];
        for (int orow = 0; orow < oR; ++orow)
            for (int oc = 0; oc < oC; ++oc) {
                int n = 0;  // the window's voxels in (p, r, c) order
                for (int p = 2 * op; p < 2 * op + 2 && p < P; ++p)
                    for (int r = 2 * orow; r < 2 * orow + 2 && r < R; ++r)
                        for (int c = 2 * oc; c < 2 * oc + 2 && c < C; ++c)
                            voxels[n++] = (int32_t)(((size_t)p * R + r) * C + c);
                const size_t o = (((size_t)op * oR + orow) * oC + oc) * ch;
                int k = 0;
                for (; k + 8 <= ch; k += 8)
                    window8(x + k, ch, voxels, n, out + o + k, arg + o + k);
                for (; k < ch; ++k) {  // widths that are not multiples of 8
                    float best = -std::numeric_limits<float>::infinity();
                    int32_t at = voxels[0];
                    for (int t = 0; t < n; ++t) {
                        const float val = x[(size_t)voxels[t] * ch + k];
                        if (val > best || std::isnan(val)) {
                            best = val;
                            at = voxels[t];
                        }
                    }
                    out[o + k] = best;
                    arg[o + k] = at;
                }
            }
    });
}

void eitmon_maxpool2_backward(int P, int R, int C, int ch, const float* gout, const int32_t* arg,
                              float* gx) {
    const int oR = (R + 1) / 2, oC = (C + 1) / 2;
    const size_t plane = (size_t)R * C * ch, per_out_plane = (size_t)oR * oC * ch;
    eitmon::parallel_for((P + 1) / 2, [&](int op) {
        const int planes = 2 * op + 1 < P ? 2 : 1;  // the input planes of this output plane
        std::memset(gx + (size_t)2 * op * plane, 0, sizeof(float) * planes * plane);
        const size_t o0 = (size_t)op * per_out_plane;
        for (size_t o = o0; o < o0 + per_out_plane; ++o)
            gx[(size_t)arg[o] * ch + o % ch] = gout[o];
    });
}

}  // extern "C"
