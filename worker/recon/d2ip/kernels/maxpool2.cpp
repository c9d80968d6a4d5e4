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

extern "C" {

void eitmon_maxpool2_forward(int P, int R, int C, int ch, const float* x, float* out,
                             int32_t* arg) {
    const int oR = (R + 1) / 2, oC = (C + 1) / 2;
    eitmon::parallel_for((P + 1) / 2, [&](int op) {
        for (int orow = 0; orow < oR; ++orow)
            for (int oc = 0; oc < oC; ++oc) {
                const size_t o = (((size_t)op * oR + orow) * oC + oc) * ch;
                for (int k = 0; k < ch; ++k) {
                    float best = -std::numeric_limits<float>::infinity();
                    int32_t at = (int32_t)((((size_t)2 * op * R) + 2 * orow) * C + 2 * oc);
                    for (int p = 2 * op; p < 2 * op + 2 && p < P; ++p)
                        for (int r = 2 * orow; r < 2 * orow + 2 && r < R; ++r)
                            for (int c = 2 * oc; c < 2 * oc + 2 && c < C; ++c) {
                                const int32_t v = (int32_t)(((size_t)p * R + r) * C + c);
                                const float val = x[(size_t)v * ch + k];
                                if (val > best || std::isnan(val)) {
                                    best = val;
                                    at = v;
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
