// Fused CPU kernels for one depthwise-separable unit of 3D-FastResUNet (paper III.D, Fig. 3):
//
//     out = act(LN(PW(DW(x))) + res)     and optionally     s = SW(x)
//
// DW: depthwise 3x3x3 cross-correlation with zero padding `dil` and dilation `dil` (no bias),
// or none (dw == nullptr: the PW input is x; the stem and ASPP's 1x1 branch);
// PW: pointwise 1x1x1 convolution (weight CO x CI, bias CO); LN: LayerNorm over the CO channels
// of each voxel (affine g, b); res: optional residual (V x CO); act: LeakyReLU(slope) or none;
// SW: an optional 1x1x1 conv of the same input x (CO x CI weight, bias), a second output: the
// ResConv3D block's shortcut, which the block's second unit takes as its residual.
// Tensors are channels-last (P, R, C, Ch), C order, float32; V = P * R * C.
//
// One pass forward, two passes backward (the input gradient is a stencil of the DW-output
// gradient, so it needs that gradient at all neighbours first). Each pass runs the grid's planes
// in parallel on the pool of pool.h. Deterministic for any thread count: voxels in C order
// within a plane, per-row float partial sums of the parameter gradients added into per-plane
// double sums, which are added in plane order. Channel counts must be multiples of 8 (one
// vector); the widths the network uses are compile-time constants (fully unrolled), others run
// a runtime-width loop.
//
// Built at first use by worker/recon/d2ip/cpu/library.py with the system C++ compiler; loaded with
// ctypes (no Python or torch headers, so it compiles in about a second).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pool.h"

namespace {

struct Grid {
    int P, R, C, dil;
    int Pp() const { return P + 2 * dil; }
    int Rp() const { return R + 2 * dil; }
    int Cp() const { return C + 2 * dil; }
};

// Per-thread scratch buffers, reused across calls (no page faults from fresh allocations).
float* scratch(int slot, size_t n) {
    thread_local std::vector<float> bufs[2];
    if (bufs[slot].size() < n) bufs[slot].resize(n);
    return bufs[slot].data();
}

// Fill the padded (P+2d, R+2d, C+2d, ch) buffer `dst`: its zero halo, and its interior from the
// (P, R, C, ch) tensor `src` (src null: the interior is left to the caller). Planes in parallel.
void pad_into(const Grid& g, int ch, const float* src, float* dst) {
    const int d = g.dil;
    const size_t row = (size_t)g.Cp() * ch, plane = (size_t)g.Rp() * row;
    const size_t edge = (size_t)d * ch * sizeof(float);
    eitmon::parallel_for(g.Pp(), [&](int pp) {
        float* t = dst + pp * plane;
        if (pp < d || pp >= g.P + d) {
            std::memset(t, 0, plane * sizeof(float));
            return;
        }
        std::memset(t, 0, d * row * sizeof(float));
        std::memset(t + (g.R + d) * row, 0, d * row * sizeof(float));
        for (int r = 0; r < g.R; ++r) {
            float* tr = t + (r + d) * row;
            std::memset(tr, 0, edge);
            std::memset(tr + (size_t)(g.C + d) * ch, 0, edge);
            if (src)
                std::memcpy(tr + (size_t)d * ch, src + ((size_t)(pp - d) * g.R + r) * g.C * ch,
                            sizeof(float) * g.C * ch);
        }
    });
}

// Offsets (in floats) of the 27 taps in the padded buffer, tap k = a * 9 + b * 3 + e,
// relative to the padded position of the output voxel's top-left-front neighbour.
void tap_offsets(const Grid& g, int ch, int64_t* off) {
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b)
            for (int e = 0; e < 3; ++e)
                off[a * 9 + b * 3 + e] =
                    (((int64_t)a * g.dil * g.Rp() + (int64_t)b * g.dil) * g.Cp() + e * g.dil) * ch;
}

// Eight channels in one vector (GCC vector extension: AVX on x86-64, two NEON
// registers on ARM). Widths are multiples of 8; `NI_`/`NO_` are CI / 8 and CO / 8 as
// compile-time constants, or 0 for runtime values.
typedef float v8 __attribute__((vector_size(32)));

inline v8 ld(const float* p) {
    v8 r;
    std::memcpy(&r, p, sizeof r);
    return r;
}
inline void st(float* p, v8 v) { std::memcpy(p, &v, sizeof v); }
inline v8 splat(float a) { return v8{a, a, a, a, a, a, a, a}; }
inline float hsum(v8 v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}
inline v8 leaky(v8 z, float slope) { return z > 0.0f ? z : z * slope; }

template <int N>
inline int count(int n) { return N > 0 ? N : n; }
constexpr int kMaxVec = 64;  // 512 channels

// One row of C output voxels of a depthwise 3x3x3 stencil: acc[c] = sum_k wt[k] * in[c + off_k].
// `in` points at the padded buffer's first neighbour of voxel 0. Blocks of 8 voxels keep their
// sums in registers over the 27 taps: 8 independent FMA chains, one store per voxel.
template <int NI_>
void stencil_row(const float* in, const int64_t* off, const float* wt, int C, int ni,
                 float* acc) {
    const int NI = count<NI_>(ni), CI = 8 * NI;
    constexpr int B = 8;
    int c = 0;
    for (; c + B <= C; c += B)
        for (int j = 0; j < NI; ++j) {
            v8 a[B];
            for (int u = 0; u < B; ++u) a[u] = splat(0.0f);
            for (int k = 0; k < 27; ++k) {
                const v8 w = ld(wt + k * CI + 8 * j);
                const float* src = in + off[k] + (size_t)c * CI + 8 * j;
                for (int u = 0; u < B; ++u) a[u] += w * ld(src + (size_t)u * CI);
            }
            for (int u = 0; u < B; ++u) st(acc + (size_t)(c + u) * CI + 8 * j, a[u]);
        }
    for (; c < C; ++c)
        for (int j = 0; j < NI; ++j) {
            v8 a = splat(0.0f);
            for (int k = 0; k < 27; ++k)
                a += ld(wt + k * CI + 8 * j) * ld(in + off[k] + (size_t)c * CI + 8 * j);
            st(acc + (size_t)c * CI + 8 * j, a);
        }
}

// out[c] = bias + in[c] W^T for one row of C voxels; `wt` is W transposed (CI x CO). Input
// channels outermost, so the updates of different voxels are independent.
template <int NO_>
void row_matmul(const float* in, int C, int CI, const float* wt, const float* bias, int no,
                float* out) {
    const int NO = count<NO_>(no), CO = 8 * NO;
    for (int c = 0; c < C; ++c)
        for (int q = 0; q < NO; ++q) st(out + (size_t)c * CO + 8 * q, ld(bias + 8 * q));
    for (int i = 0; i < CI; ++i) {
        const float* wr = wt + (size_t)i * CO;
        for (int c = 0; c < C; ++c) {
            const v8 di = splat(in[(size_t)c * CI + i]);
            float* oc = out + (size_t)c * CO;
            for (int q = 0; q < NO; ++q) st(oc + 8 * q, ld(oc + 8 * q) + ld(wr + 8 * q) * di);
        }
    }
}

std::vector<float> transposed(const float* w, int rows, int cols) {
    std::vector<float> t((size_t)rows * cols);
    for (int o = 0; o < rows; ++o)
        for (int i = 0; i < cols; ++i) t[(size_t)i * rows + o] = w[(size_t)o * cols + i];
    return t;
}

template <int NI_, int NO_>
void forward(const Grid& g, int ci_rt, int co_rt, const float* x, const float* dw,
             const float* pw, const float* pb, const float* lg, const float* lb,
             const float* res, const float* sw, const float* sb, float slope, int act,
             float eps, float* out, float* dsave, float* xhat, float* rstd, float* sout) {
    const int NI = count<NI_>(ci_rt / 8), NO = count<NO_>(co_rt / 8);
    const int CI = 8 * NI, CO = 8 * NO;
    float* xp = scratch(0, dw ? (size_t)g.Pp() * g.Rp() * g.Cp() * CI : 0);
    if (dw) pad_into(g, CI, x, xp);
    int64_t off[27];
    tap_offsets(g, CI, off);
    std::vector<float> wt(27 * CI);  // tap-major DW
    for (int c = 0; dw && c < CI; ++c)
        for (int k = 0; k < 27; ++k) wt[k * CI + c] = dw[c * 27 + k];
    const std::vector<float> pwt = transposed(pw, CO, CI);
    const std::vector<float> swt = sw ? transposed(sw, CO, CI) : std::vector<float>();
    const float inv_co = 1.0f / CO;
    eitmon::parallel_for(g.P, [&](int p) {
        std::vector<float> yrow((size_t)g.C * CO);
        size_t v = (size_t)p * g.R * g.C;
        for (int r = 0; r < g.R; ++r) {
            const float* drow = x + v * CI;  // no DW: the PW input is x itself
            if (dw) {
                const float* base = xp + ((size_t)p * g.Rp() + r) * g.Cp() * CI;
                stencil_row<NI_>(base, off, wt.data(), g.C, NI, dsave + v * CI);
                drow = dsave + v * CI;
            }
            row_matmul<NO_>(drow, g.C, CI, pwt.data(), pb, NO, yrow.data());
            if (sw) row_matmul<NO_>(x + v * CI, g.C, CI, swt.data(), sb, NO, sout + v * CO);
            for (int c = 0; c < g.C; ++c, ++v) {
                v8 y[NO_ > 0 ? NO_ : kMaxVec];
                for (int q = 0; q < NO; ++q) y[q] = ld(yrow.data() + (size_t)c * CO + 8 * q);
                v8 s = splat(0.0f);
                for (int q = 0; q < NO; ++q) s += y[q];
                const v8 mean = splat(hsum(s) * inv_co);
                v8 s2 = splat(0.0f);
                for (int q = 0; q < NO; ++q) {
                    y[q] -= mean;
                    s2 += y[q] * y[q];
                }
                const float rs = 1.0f / std::sqrt(hsum(s2) * inv_co + eps);
                rstd[v] = rs;
                const v8 rsv = splat(rs);
                for (int q = 0; q < NO; ++q) {
                    const v8 xh = y[q] * rsv;
                    st(xhat + v * CO + 8 * q, xh);
                    v8 z = xh * ld(lg + 8 * q) + ld(lb + 8 * q);
                    if (res) z += ld(res + v * CO + 8 * q);
                    st(out + v * CO + 8 * q, act ? leaky(z, slope) : z);
                }
            }
        }
    });
}

// Backward of a 1x1x1 conv at one voxel, output gradient g (CO) and input in (CI): the weight
// gradient's per-row partial sums acc (CO x CI) += g in^T, and the input gradient gin += W^T g.
template <int NI_>
inline void conv1_backward_voxel(const float* g, int CO, const float* in, const float* w, int ni,
                                 float* acc, v8* gin) {
    const int NI = count<NI_>(ni), CI = 8 * NI;
    for (int o = 0; o < CO; ++o) {
        const v8 go = splat(g[o]);
        const float* wr = w + (size_t)o * CI;
        float* ar = acc + (size_t)o * CI;
        for (int j = 0; j < NI; ++j) {
            st(ar + 8 * j, ld(ar + 8 * j) + go * ld(in + 8 * j));
            gin[j] += go * ld(wr + 8 * j);
        }
    }
}

// Per-plane partial sums (double) of the parameter gradients, added in plane order at the end:
// the totals do not depend on which thread ran which plane, or on how many threads there were.
class PlaneSums {
public:
    PlaneSums(int planes, size_t n) : n_(n), a_((size_t)planes * n, 0.0) {}
    double* plane(int p) { return a_.data() + (size_t)p * n_; }
    float total(size_t j) const {
        double t = 0.0;
        for (size_t k = j; k < a_.size(); k += n_) t += a_[k];
        return (float)t;
    }

private:
    size_t n_;
    std::vector<double> a_;
};

// Backward of the side output s = x sw^T + sb (the block's 1x1x1 shortcut, computed with the
// unit's first pass over x) on plane p: weight and bias gradients into acc (CO x CI, then CO),
// and sw^T gs added into gx.
template <int NI_>
void skip_backward_plane(const Grid& g, int p, int ni, int CO, const float* x, const float* sw,
                         const float* gs, float* gx, double* acc) {
    const int NI = count<NI_>(ni), CI = 8 * NI;
    std::vector<float> r_sw((size_t)CO * CI), r_sb(CO);
    size_t v = (size_t)p * g.R * g.C;
    for (int r = 0; r < g.R; ++r) {
        std::fill(r_sw.begin(), r_sw.end(), 0.0f);
        std::fill(r_sb.begin(), r_sb.end(), 0.0f);
        for (int c = 0; c < g.C; ++c, ++v) {
            const float* gsc = gs + v * CO;
            v8 gv[NI_ > 0 ? NI_ : kMaxVec];
            for (int j = 0; j < NI; ++j) gv[j] = gx ? ld(gx + v * CI + 8 * j) : splat(0.0f);
            conv1_backward_voxel<NI_>(gsc, CO, x + v * CI, sw, NI, r_sw.data(), gv);
            for (int o = 0; o < CO; ++o) r_sb[o] += gsc[o];
            if (gx)
                for (int j = 0; j < NI; ++j) st(gx + v * CI + 8 * j, gv[j]);
        }
        for (size_t j = 0; j < r_sw.size(); ++j) acc[j] += r_sw[j];
        for (int o = 0; o < CO; ++o) acc[r_sw.size() + o] += r_sb[o];
    }
}

template <int NI_, int NO_>
void backward(const Grid& g, int ci_rt, int co_rt, const float* x, const float* dw,
              const float* pw, const float* lg, float slope, int act, const float* out,
              const float* dsave, const float* xhat, const float* rstd, const float* gout,
              const float* sw, const float* gs, float* gx, float* gdw, float* gpw, float* gpb,
              float* glg, float* glb, float* gres, float* gsw, float* gsb) {
    const int NI = count<NI_>(ci_rt / 8), NO = count<NO_>(co_rt / 8);
    const int CI = 8 * NI, CO = 8 * NO;
    const int d = g.dil;
    const size_t padded = dw ? (size_t)g.Pp() * g.Rp() * g.Cp() * CI : 0;
    float* xp = scratch(0, padded);
    float* gdp = scratch(1, padded);  // padded gd: pass 1 fills the interior
    if (dw) {
        pad_into(g, CI, x, xp);
        pad_into(g, CI, nullptr, gdp);
    }
    int64_t off[27];
    tap_offsets(g, CI, off);
    // Parameter-gradient sums per plane: DW (27 x CI, tap-major), PW (CO x CI), PW bias, LN
    // weight, LN bias.
    const size_t o_pw = 27 * (size_t)CI, o_pb = o_pw + (size_t)CO * CI, o_g = o_pb + CO,
                 o_b = o_g + CO;
    PlaneSums sums(g.P, o_b + CO);
    const float inv_co = 1.0f / CO;
    // Pass 1, row by row: act and LN backward per voxel (-> gp, the PW-output gradient); PW
    // backward (-> the DW-output gradient gd, into the padded buffer); the DW weight gradient
    // (padded input at each tap times gd). Loops are ordered so that consecutive updates are
    // independent (voxels innermost), never one long FMA chain.
    eitmon::parallel_for(g.P, [&](int p) {
        double* acc = sums.plane(p);
        std::vector<float> r_pw((size_t)CO * CI), gprow((size_t)g.C * CO);
        std::vector<float> gdscratch(dw || gx ? 0 : (size_t)g.C * CI);
        size_t v = (size_t)p * g.R * g.C;
        for (int r = 0; r < g.R; ++r) {
            v8 sg[NO_ > 0 ? NO_ : kMaxVec], sb[NO_ > 0 ? NO_ : kMaxVec],
                sp[NO_ > 0 ? NO_ : kMaxVec];
            for (int q = 0; q < NO; ++q) sg[q] = sb[q] = sp[q] = splat(0.0f);
            const size_t v0 = v;
            for (int c = 0; c < g.C; ++c, ++v) {
                v8 gxh[NO_ > 0 ? NO_ : kMaxVec], xh[NO_ > 0 ? NO_ : kMaxVec];
                v8 s1 = splat(0.0f), s2 = splat(0.0f);
                for (int q = 0; q < NO; ++q) {
                    v8 gz = ld(gout + v * CO + 8 * q);
                    if (act) gz = ld(out + v * CO + 8 * q) > 0.0f ? gz : gz * slope;
                    if (gres) st(gres + v * CO + 8 * q, gz);
                    xh[q] = ld(xhat + v * CO + 8 * q);
                    sg[q] += gz * xh[q];
                    sb[q] += gz;
                    gxh[q] = gz * ld(lg + 8 * q);
                    s1 += gxh[q];
                    s2 += gxh[q] * xh[q];
                }
                const v8 m1 = splat(hsum(s1) * inv_co), m2 = splat(hsum(s2) * inv_co);
                const v8 rs = splat(rstd[v]);
                for (int q = 0; q < NO; ++q) {
                    const v8 gp = rs * (gxh[q] - m1 - xh[q] * m2);
                    sp[q] += gp;
                    st(gprow.data() + (size_t)c * CO + 8 * q, gp);
                }
            }
            for (int q = 0; q < NO; ++q) {
                for (int l = 0; l < 8; ++l) {
                    acc[o_g + 8 * q + l] += sg[q][l];
                    acc[o_b + 8 * q + l] += sb[q][l];
                    acc[o_pb + 8 * q + l] += sp[q][l];
                }
            }
            const float* drow = (dw ? dsave : x) + v0 * CI;
            float* gdrow = dw   ? gdp + (((size_t)(p + d) * g.Rp() + (r + d)) * g.Cp() + d) * CI
                           : gx ? gx + v0 * CI
                                : gdscratch.data();
            std::fill(r_pw.begin(), r_pw.end(), 0.0f);
            for (int c = 0; c < g.C; ++c) {
                const float* gpc = gprow.data() + (size_t)c * CO;
                const float* dc = drow + (size_t)c * CI;
                v8 gd[NI_ > 0 ? NI_ : kMaxVec];
                for (int j = 0; j < NI; ++j) gd[j] = splat(0.0f);
                conv1_backward_voxel<NI_>(gpc, CO, dc, pw, NI, r_pw.data(), gd);
                for (int j = 0; j < NI; ++j) st(gdrow + (size_t)c * CI + 8 * j, gd[j]);
            }
            for (size_t j = 0; j < r_pw.size(); ++j) acc[o_pw + j] += r_pw[j];
            if (!dw) continue;
            const float* xrow = xp + ((size_t)p * g.Rp() + r) * g.Cp() * CI;
            const int64_t e1 = (int64_t)d * CI, e2 = 2 * e1;  // taps along C
            for (int j = 0; j < NI; ++j) {
                // the 27 taps' sums in registers, each gd vector loaded once for all of them
                v8 a[27];
                for (int k = 0; k < 27; ++k) a[k] = splat(0.0f);
                for (int c = 0; c < g.C; ++c) {
                    const v8 gv = ld(gdrow + (size_t)c * CI + 8 * j);
                    const float* xc = xrow + (size_t)c * CI + 8 * j;
#pragma GCC unroll 9
                    for (int ab = 0; ab < 9; ++ab) {
                        const float* xr = xc + off[3 * ab];
                        a[3 * ab] += ld(xr) * gv;
                        a[3 * ab + 1] += ld(xr + e1) * gv;
                        a[3 * ab + 2] += ld(xr + e2) * gv;
                    }
                }
                for (int k = 0; k < 27; ++k)
                    for (int l = 0; l < 8; ++l) acc[k * CI + 8 * j + l] += a[k][l];
            }
        }
    });
    for (int i = 0; dw && i < CI; ++i)
        for (int k = 0; k < 27; ++k) gdw[i * 27 + k] = sums.total((size_t)k * CI + i);
    for (size_t j = 0; j < (size_t)CO * CI; ++j) gpw[j] = sums.total(o_pw + j);
    for (int o = 0; o < CO; ++o) {
        gpb[o] = sums.total(o_pb + o);
        glg[o] = sums.total(o_g + o);
        glb[o] = sums.total(o_b + o);
    }
    // Pass 2, once every plane's gd is in place: the input gradient, gx[v] = sum_k w[k] *
    // gd[v - offset_k] (the flipped kernel), then the side output's backward added into it.
    const bool stencil = gx && dw;
    if (!stencil && !sw) return;
    std::vector<float> wt(stencil ? 27 * CI : 0);
    for (int i = 0; stencil && i < CI; ++i)
        for (int k = 0; k < 27; ++k) wt[(26 - k) * CI + i] = dw[i * 27 + k];
    PlaneSums side(sw ? g.P : 0, (size_t)CO * CI + CO);
    eitmon::parallel_for(g.P, [&](int p) {
        for (int r = 0; stencil && r < g.R; ++r) {
            const float* base = gdp + ((size_t)p * g.Rp() + r) * g.Cp() * CI;
            stencil_row<NI_>(base, off, wt.data(), g.C, NI,
                             gx + ((size_t)p * g.R + r) * g.C * CI);
        }
        if (sw) skip_backward_plane<NI_>(g, p, NI, CO, x, sw, gs, gx, side.plane(p));
    });
    for (size_t j = 0; sw && j < (size_t)CO * CI; ++j) gsw[j] = side.total(j);
    for (int o = 0; sw && o < CO; ++o) gsb[o] = side.total((size_t)CO * CI + o);
}

using ForwardFn = decltype(&forward<0, 0>);
using BackwardFn = decltype(&backward<0, 0>);

struct Entry {
    int ci, co;
    ForwardFn f;
    BackwardFn b;
};

#define EITMON_PAIR(a, b) {a, b, &forward<a / 8, b / 8>, &backward<a / 8, b / 8>}
// The (CI, CO) pairs of the default NetConfig and of NetConfig(stem_width=16,
// widths=(16, 32, 64)); other widths run the runtime-width instantiation.
const Entry kTable[] = {
    EITMON_PAIR(8, 8),   EITMON_PAIR(8, 16),  EITMON_PAIR(16, 16), EITMON_PAIR(16, 32),
    EITMON_PAIR(32, 32), EITMON_PAIR(32, 64), EITMON_PAIR(64, 64), EITMON_PAIR(64, 32),
    EITMON_PAIR(32, 16), EITMON_PAIR(16, 8),  EITMON_PAIR(128, 64), EITMON_PAIR(32, 8),
};
#undef EITMON_PAIR

const Entry* lookup(int ci, int co) {
    for (const Entry& e : kTable)
        if (e.ci == ci && e.co == co) return &e;
    return nullptr;
}

}  // namespace

extern "C" {

void eitmon_dwsep_forward(int P, int R, int C, int CI, int CO, int dil, const float* x,
                          const float* dw, const float* pw, const float* pb, const float* lg,
                          const float* lb, const float* res, const float* sw, const float* sb,
                          float slope, int act, float eps, float* out, float* dsave,
                          float* xhat, float* rstd, float* sout) {
    const Grid g{P, R, C, dil};
    const Entry* e = lookup(CI, CO);
    (e ? e->f : &forward<0, 0>)(g, CI, CO, x, dw, pw, pb, lg, lb, res, sw, sb, slope, act, eps,
                                out, dsave, xhat, rstd, sout);
}

void eitmon_dwsep_backward(int P, int R, int C, int CI, int CO, int dil, const float* x,
                           const float* dw, const float* pw, const float* lg, float slope,
                           int act, const float* out, const float* dsave, const float* xhat,
                           const float* rstd, const float* gout, const float* sw,
                           const float* gs, float* gx, float* gdw, float* gpw, float* gpb,
                           float* glg, float* glb, float* gres, float* gsw, float* gsb) {
    const Grid g{P, R, C, dil};
    const Entry* e = lookup(CI, CO);
    (e ? e->b : &backward<0, 0>)(g, CI, CO, x, dw, pw, lg, slope, act, out, dsave, xhat, rstd,
                                 gout, sw, gs, gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb);
}

// Threads for the kernels, the caller included (1: no workers).
void eitmon_set_threads(int threads) { eitmon::pool().resize(threads < 1 ? 1 : threads); }

int eitmon_threads() { return eitmon::pool().threads(); }

// Microseconds the pool's threads spin for the next job (workers) or the job's end (the caller)
// before they sleep; 0: sleep at once.
void eitmon_set_spin(int microseconds) { eitmon::pool().set_spin(microseconds); }

int eitmon_spin() { return eitmon::pool().spin(); }

// The pool's workers that are not asleep (spinning, working or waiting for a CPU).
int eitmon_awake_workers() { return eitmon::pool().awake(); }

}  // extern "C"
