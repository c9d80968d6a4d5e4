// The data term's two products with the range-compressed Jacobian B (r x V, row-major,
// float32; loss.DataTerm): y = B x forward and x = B^T y backward, on the pool of pool.h.
//
// B (20 MB at the default grid) does not stay in the cache between iterations, so both products
// run at memory bandwidth; two cores read it faster than one. Each output element is summed by
// one thread in a fixed order (rows of B for y, column blocks for B^T y): deterministic for any
// thread count. B^T y also serves a single frame's linear reconstruction (the preview's
// x = L^T c, worker/recon/linear.py), there with L stored as binary16 as well: half the bytes.

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "pool.h"

namespace {

typedef float v8 __attribute__((vector_size(32)));

inline v8 ld(const float* p) {
    v8 r;
    __builtin_memcpy(&r, p, sizeof r);
    return r;
}

inline float hsum(v8 s) {
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// IEEE binary16 -> binary32, exact (zero, subnormals, infinities and NaN included): the
// scalar conversion, for tails and for CPUs without F16C.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise the mantissa
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline v8 ldh(const uint16_t* p) {
#if defined(__F16C__)
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    v8 r;
    __builtin_memcpy(&r, &f, sizeof r);
    return r;
#else
    v8 r;
    for (int i = 0; i < 8; ++i) r[i] = half_to_float(p[i]);
    return r;
#endif
}

constexpr int kRows = 8;      // rows of B per task of y = B x (a multiple of 4)
constexpr int kCols = 1024;   // columns per task of B^T y (its sums stay in L1; a multiple of 8)

// y[i..i+4) = rows i..i+4 of B times x: four rows share each load of x (four streams from
// memory at once); tails of fewer rows or columns are summed one by one.
void four_rows(const float* a, int n, int rows, const float* x, float* y) {
    const float* r0 = a;
    const float* r1 = rows > 1 ? a + n : a;
    const float* r2 = rows > 2 ? a + 2 * (size_t)n : a;
    const float* r3 = rows > 3 ? a + 3 * (size_t)n : a;
    v8 s0 = {}, s1 = {}, s2 = {}, s3 = {};
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const v8 xv = ld(x + j);
        s0 += ld(r0 + j) * xv;
        s1 += ld(r1 + j) * xv;
        s2 += ld(r2 + j) * xv;
        s3 += ld(r3 + j) * xv;
    }
    float t[4] = {hsum(s0), hsum(s1), hsum(s2), hsum(s3)};
    const float* r[4] = {r0, r1, r2, r3};
    for (int k = 0; k < rows; ++k) {
        for (int c = j; c < n; ++c) t[k] += r[k][c] * x[c];
        y[k] = t[k];
    }
}

// x = A^T y for A (m x n) row-major, element type T (float, or binary16 as uint16_t): column
// blocks of kCols, four rows per sweep over a block's sums (each x element summed by one thread
// in a fixed order).
template <class T, v8 (*Load)(const T*), float (*Scalar)(T)>
void matvec_t(int m, int n, const T* a, const float* y, float* x) {
    eitmon::parallel_for((n + kCols - 1) / kCols, [&](int task) {
        const int j0 = task * kCols, w = j0 + kCols < n ? kCols : n - j0;
        const int wv = w / 8 * 8;
        v8 acc[kCols / 8] = {};
        float tail[8] = {};
        int i = 0;
        for (; i + 4 <= m; i += 4) {  // four rows per sweep over the block's sums
            const T* r0 = a + (size_t)i * n + j0;
            const T *r1 = r0 + n, *r2 = r1 + n, *r3 = r2 + n;
            const v8 y0 = v8{} + y[i], y1 = v8{} + y[i + 1], y2 = v8{} + y[i + 2],
                     y3 = v8{} + y[i + 3];
            for (int j = 0; j < wv; j += 8)
                acc[j / 8] += ((Load(r0 + j) * y0 + Load(r1 + j) * y1) +
                               (Load(r2 + j) * y2 + Load(r3 + j) * y3));
            for (int j = wv; j < w; ++j)
                tail[j - wv] += (Scalar(r0[j]) * y[i] + Scalar(r1[j]) * y[i + 1]) +
                                (Scalar(r2[j]) * y[i + 2] + Scalar(r3[j]) * y[i + 3]);
        }
        for (; i < m; ++i) {
            const T* r0 = a + (size_t)i * n + j0;
            const v8 y0 = v8{} + y[i];
            for (int j = 0; j < wv; j += 8) acc[j / 8] += Load(r0 + j) * y0;
            for (int j = wv; j < w; ++j) tail[j - wv] += Scalar(r0[j]) * y[i];
        }
        for (int j = 0; j < wv; j += 8) __builtin_memcpy(x + j0 + j, &acc[j / 8], sizeof(v8));
        for (int j = wv; j < w; ++j) x[j0 + j] = tail[j - wv];
    });
}

inline float same(float v) { return v; }

}  // namespace

extern "C" {

void eitmon_matvec(int m, int n, const float* a, const float* x, float* y) {
    eitmon::parallel_for((m + kRows - 1) / kRows, [&](int task) {
        const int end = (task + 1) * kRows < m ? (task + 1) * kRows : m;
        for (int i = task * kRows; i < end; i += 4)
            four_rows(a + (size_t)i * n, n, end - i < 4 ? end - i : 4, x, y + i);
    });
}

void eitmon_matvec_t(int m, int n, const float* a, const float* y, float* x) {
    matvec_t<float, ld, same>(m, n, a, y, x);
}

// The same product with A stored as IEEE binary16 (half the bytes a product reads; converted
// to float32 as loaded, summed in float32 in the same order): x = A^T y.
void eitmon_matvec_t_half(int m, int n, const uint16_t* a, const float* y, float* x) {
    matvec_t<uint16_t, ldh, half_to_float>(m, n, a, y, x);
}

// binary16 -> binary32 by the scalar conversion (the fallback without F16C), for tests.
float eitmon_half_to_float(uint16_t h) { return half_to_float(h); }

}  // extern "C"
