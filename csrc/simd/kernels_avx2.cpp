// AVX2 + FMA kernels (this file alone is compiled with -mavx2 -mfma -mf16c; see CMakeLists.txt).
#include <immintrin.h>

#include <cstring>

#include "simd/dispatch.h"

namespace upper_fast::simd {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline std::int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// 8 bf16 -> 8 f32: widen to 32 bits and shift into the high half (exact).
inline __m256 load_bf16x8(const std::uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Tails are summed in scalar after the vector part; four accumulators hide the FMA latency.
float dot_f32(const float* a, const float* b, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
         s3 = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Same rounding as the scalar loop: one fused multiply-add per element either way (y + a*x rounded
// once), so results match the scalar reference where the compiler contracts it, and within 1 ulp
// otherwise.
void axpy_f32(float a, const float* x, float* y, std::size_t n) {
  const __m256 va = _mm256_set1_ps(a);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

float dot_f32_bf16(const float* a, const std::uint16_t* b, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load_bf16x8(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load_bf16x8(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load_bf16x8(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * bf16_to_float(b[i]);
  return s;
}

float dot_bf16(const std::uint16_t* a, const std::uint16_t* b, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(load_bf16x8(a + i), load_bf16x8(b + i), s0);
    s1 = _mm256_fmadd_ps(load_bf16x8(a + i + 8), load_bf16x8(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load_bf16x8(a + i), load_bf16x8(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += bf16_to_float(a[i]) * bf16_to_float(b[i]);
  return s;
}

// Sign-extend 16 int8 to int16 and multiply-add adjacent pairs into int32 (exact: |pair| <= 2^15).
std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) {
  __m256i s = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    s = _mm256_add_epi32(s, _mm256_madd_epi16(x, y));
  }
  std::int32_t r = hsum_i32(s);
  for (; i < n; ++i) r += static_cast<std::int32_t>(a[i]) * b[i];
  return r;
}

// Score micro-kernel: 16 queries (two ymm of lanes) x NC candidates, 2*NC accumulators held in
// registers; per coordinate two query loads from the packed panel and NC broadcasts from the
// candidate rows. NC = 6 uses 12 + 2 + 1 of the 16 ymm registers.
constexpr std::size_t kPanel = 16;

inline void finish_column(__m256 lo, __m256 hi, __m256 t0, __m256 t1, float* out, std::uint32_t* mask,
                          __m256& nonfinite) {
  _mm256_storeu_ps(out, lo);
  _mm256_storeu_ps(out + 8, hi);
  // x - x is 0 for finite x and NaN otherwise; OR-ing keeps any NaN pattern.
  nonfinite = _mm256_or_ps(nonfinite, _mm256_or_ps(_mm256_sub_ps(lo, lo), _mm256_sub_ps(hi, hi)));
  const int l = _mm256_movemask_ps(_mm256_cmp_ps(lo, t0, _CMP_GT_OQ));
  const int h = _mm256_movemask_ps(_mm256_cmp_ps(hi, t1, _CMP_GT_OQ));
  *mask = static_cast<std::uint32_t>(l) | (static_cast<std::uint32_t>(h) << 8);
}

// Named accumulators rather than an array: GCC spills an accumulator array to the stack on every
// iteration, which halves the throughput.
template <int NC>
__attribute__((always_inline)) inline void score_tile(const float* qpack, const float* cand, std::size_t d,
                                                      __m256 t0, __m256 t1, float* out, std::uint32_t* mask,
                                                      __m256& nonfinite) {
  const __m256 z = _mm256_setzero_ps();
  __m256 a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z, a4 = z, b4 = z, a5 = z, b5 = z;
  const float* r0 = cand;
  const float* r1 = cand + (NC > 1 ? d : 0);
  const float* r2 = cand + (NC > 2 ? 2 * d : 0);
  const float* r3 = cand + (NC > 3 ? 3 * d : 0);
  const float* r4 = cand + (NC > 4 ? 4 * d : 0);
  const float* r5 = cand + (NC > 5 ? 5 * d : 0);
  for (std::size_t k = 0; k < d; ++k) {
    const __m256 q0 = _mm256_load_ps(qpack + k * kPanel);
    const __m256 q1 = _mm256_load_ps(qpack + k * kPanel + 8);
    __m256 x = _mm256_broadcast_ss(r0 + k);
    a0 = _mm256_fmadd_ps(q0, x, a0);
    b0 = _mm256_fmadd_ps(q1, x, b0);
    if constexpr (NC > 1) {
      x = _mm256_broadcast_ss(r1 + k);
      a1 = _mm256_fmadd_ps(q0, x, a1);
      b1 = _mm256_fmadd_ps(q1, x, b1);
    }
    if constexpr (NC > 2) {
      x = _mm256_broadcast_ss(r2 + k);
      a2 = _mm256_fmadd_ps(q0, x, a2);
      b2 = _mm256_fmadd_ps(q1, x, b2);
    }
    if constexpr (NC > 3) {
      x = _mm256_broadcast_ss(r3 + k);
      a3 = _mm256_fmadd_ps(q0, x, a3);
      b3 = _mm256_fmadd_ps(q1, x, b3);
    }
    if constexpr (NC > 4) {
      x = _mm256_broadcast_ss(r4 + k);
      a4 = _mm256_fmadd_ps(q0, x, a4);
      b4 = _mm256_fmadd_ps(q1, x, b4);
    }
    if constexpr (NC > 5) {
      x = _mm256_broadcast_ss(r5 + k);
      a5 = _mm256_fmadd_ps(q0, x, a5);
      b5 = _mm256_fmadd_ps(q1, x, b5);
    }
  }
  finish_column(a0, b0, t0, t1, out, mask, nonfinite);
  if constexpr (NC > 1) finish_column(a1, b1, t0, t1, out + kPanel, mask + 1, nonfinite);
  if constexpr (NC > 2) finish_column(a2, b2, t0, t1, out + 2 * kPanel, mask + 2, nonfinite);
  if constexpr (NC > 3) finish_column(a3, b3, t0, t1, out + 3 * kPanel, mask + 3, nonfinite);
  if constexpr (NC > 4) finish_column(a4, b4, t0, t1, out + 4 * kPanel, mask + 4, nonfinite);
  if constexpr (NC > 5) finish_column(a5, b5, t0, t1, out + 5 * kPanel, mask + 5, nonfinite);
}

bool score_panel_f32(const float* qpack, const float* cand, std::size_t nc, std::size_t d,
                     const float* thr, float* out, std::uint32_t* mask) {
  const __m256 t0 = _mm256_loadu_ps(thr), t1 = _mm256_loadu_ps(thr + 8);
  __m256 nonfinite = _mm256_setzero_ps();
  std::size_t c = 0;
  for (; c + 6 <= nc; c += 6) score_tile<6>(qpack, cand + c * d, d, t0, t1, out + c * kPanel, mask + c, nonfinite);
  const float* cr = cand + c * d;
  float* o = out + c * kPanel;
  std::uint32_t* mk = mask + c;
  switch (nc - c) {
    case 5: score_tile<5>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 4: score_tile<4>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 3: score_tile<3>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 2: score_tile<2>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 1: score_tile<1>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    default: break;
  }
  return _mm256_movemask_ps(_mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q)) == 0;
}

void bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_bf16x8(in + i));
  for (; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

#include "simd/dist_impl.h"

}  // namespace

const Kernels& avx2_kernels() {
  static const Kernels table{Level::avx2, "avx2", dot_f32, dot_f32_bf16, dot_bf16, dot_i8,
                             kPanel, score_panel_f32, bf16_to_f32, dist_f32, dist_bf16, dist_i8, axpy_f32};
  return table;
}

}  // namespace upper_fast::simd
