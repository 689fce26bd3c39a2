// AVX-512 kernels (F/BW/DQ/VL + BF16 + VNNI; this file alone is compiled with those flags, see
// CMakeLists.txt). dispatch.cpp selects this table only when the CPU has all of them.
// GCC 12's AVX-512 headers initialise _mm512_undefined_*() from itself, which trips these
// warnings at every inlined intrinsic; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "simd/dispatch.h"

namespace upper_fast::simd {
namespace {

// 16 bf16 -> 16 f32 (exact widening).
inline __m512 load_bf16x16(const std::uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Horizontal sums via 256/128-bit halves (GCC 12's _mm512_reduce_* trip -Wuninitialized).
inline float hsum(__m512 v) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline std::int32_t hsum_i32(__m512i v) {
  __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline __mmask16 tail16(std::size_t r) { return static_cast<__mmask16>((1u << r) - 1u); }
inline __mmask32 tail32(std::size_t r) { return r >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << r) - 1u); }

// Tails use masked loads (zeros contribute nothing), so no scalar epilogue. Four accumulators
// hide the FMA latency at the common dims (64 to 1024).
float dot_f32(const float* a, const float* b, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    const __mmask16 m = tail16(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return hsum(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

// The tail takes 8- and 4-wide steps and a scalar epilogue, not a masked store: the trainer calls
// this on the same y many times in a row, and a masked store's data is not forwarded to the next
// call's load (measured on the item-interaction trainer, docs/experiments/
// 2026-12-07-item-interactions-native-sampling.md). Rounding as in the AVX2 version.
void axpy_f32(float a, const float* x, float* y, std::size_t n) {
  const __m512 va = _mm512_set1_ps(a);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i + 8 <= n) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm512_castps512_ps256(va), _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    i += 8;
  }
  if (i + 4 <= n) {
    _mm_storeu_ps(y + i, _mm_fmadd_ps(_mm512_castps512_ps128(va), _mm_loadu_ps(x + i), _mm_loadu_ps(y + i)));
    i += 4;
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

float dot_f32_bf16(const float* a, const std::uint16_t* b, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), load_bf16x16(b + i), s0);
  if (i < n) {
    const __mmask16 m = tail16(n - i);
    __m512 x = _mm512_maskz_loadu_ps(m, a + i);
    __m512 y = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, b + i)), 16));
    s0 = _mm512_fmadd_ps(x, y, s0);
  }
  return hsum(s0);
}

// vdpbf16ps: 32 bf16 pairs per instruction, products accumulated in f32.
float dot_bf16(const std::uint16_t* a, const std::uint16_t* b, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_dpbf16_ps(s0, (__m512bh)_mm512_loadu_si512(a + i), (__m512bh)_mm512_loadu_si512(b + i));
    s1 = _mm512_dpbf16_ps(s1, (__m512bh)_mm512_loadu_si512(a + i + 32), (__m512bh)_mm512_loadu_si512(b + i + 32));
  }
  for (; i < n; i += 32) {
    const __mmask32 m = tail32(n - i);
    s0 = _mm512_dpbf16_ps(s0, (__m512bh)_mm512_maskz_loadu_epi16(m, a + i),
                          (__m512bh)_mm512_maskz_loadu_epi16(m, b + i));
  }
  return hsum(_mm512_add_ps(s0, s1));
}

inline __mmask64 tail64(std::size_t r) { return r >= 64 ? ~__mmask64{0} : (__mmask64{1} << r) - 1u; }

// VNNI vpdpbusd (u8 x s8, 64 pairs per instruction) on a + 128 (a XOR 0x80 read as u8), then the
// bias removed exactly: sum (a + 128) b - 128 sum b = sum a b. Both sums are int32 (no saturation;
// at most 255 * 128 * n / 16 per lane, far inside int32 for n < 2^17), so the result is exact for
// any int8 inputs. Two instructions per 64 pairs, where the int16 route needed four.
std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i s = _mm512_setzero_si512(), c = _mm512_setzero_si512();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i y = _mm512_loadu_si512(b + i);
    s = _mm512_dpbusd_epi32(s, _mm512_xor_si512(_mm512_loadu_si512(a + i), bias), y);
    c = _mm512_dpbusd_epi32(c, bias, y);
  }
  if (i < n) {  // masked-off lanes of y are 0, so they add nothing to either sum
    const __mmask64 m = tail64(n - i);
    const __m512i y = _mm512_maskz_loadu_epi8(m, b + i);
    s = _mm512_dpbusd_epi32(s, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, a + i), bias), y);
    c = _mm512_dpbusd_epi32(c, bias, y);
  }
  return hsum_i32(_mm512_sub_epi32(s, c));
}

// Score micro-kernel: 32 queries (two zmm of lanes) x NC candidates; NC = 12 keeps 24 of the 32
// zmm registers as accumulators.
constexpr std::size_t kPanel = 32;

template <int NC>
inline void score_tile(const float* qpack, const float* cand, std::size_t d, __m512 t0, __m512 t1,
                       float* out, std::uint32_t* mask, __mmask16& nonfinite) {
  __m512 acc[NC][2];
  for (int c = 0; c < NC; ++c) acc[c][0] = acc[c][1] = _mm512_setzero_ps();
  for (std::size_t k = 0; k < d; ++k) {
    const __m512 q0 = _mm512_load_ps(qpack + k * kPanel);
    const __m512 q1 = _mm512_load_ps(qpack + k * kPanel + 16);
    for (int c = 0; c < NC; ++c) {
      const __m512 b = _mm512_set1_ps(cand[c * d + k]);
      acc[c][0] = _mm512_fmadd_ps(q0, b, acc[c][0]);
      acc[c][1] = _mm512_fmadd_ps(q1, b, acc[c][1]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    _mm512_storeu_ps(out + c * kPanel, acc[c][0]);
    _mm512_storeu_ps(out + c * kPanel + 16, acc[c][1]);
    // x - x is NaN exactly when x is NaN or +-inf.
    nonfinite |= _mm512_cmp_ps_mask(_mm512_sub_ps(acc[c][0], acc[c][0]), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    nonfinite |= _mm512_cmp_ps_mask(_mm512_sub_ps(acc[c][1], acc[c][1]), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const std::uint32_t lo = _mm512_cmp_ps_mask(acc[c][0], t0, _CMP_GT_OQ);
    const std::uint32_t hi = _mm512_cmp_ps_mask(acc[c][1], t1, _CMP_GT_OQ);
    mask[c] = lo | (hi << 16);
  }
}

bool score_panel_f32(const float* qpack, const float* cand, std::size_t nc, std::size_t d,
                     const float* thr, float* out, std::uint32_t* mask) {
  const __m512 t0 = _mm512_loadu_ps(thr), t1 = _mm512_loadu_ps(thr + 16);
  __mmask16 nonfinite = 0;
  std::size_t c = 0;
  for (; c + 12 <= nc; c += 12)
    score_tile<12>(qpack, cand + c * d, d, t0, t1, out + c * kPanel, mask + c, nonfinite);
  const float* cr = cand + c * d;
  float* o = out + c * kPanel;
  std::uint32_t* mk = mask + c;
  switch (nc - c) {
    case 11: score_tile<11>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 10: score_tile<10>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 9: score_tile<9>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 8: score_tile<8>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 7: score_tile<7>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 6: score_tile<6>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 5: score_tile<5>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 4: score_tile<4>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 3: score_tile<3>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 2: score_tile<2>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    case 1: score_tile<1>(qpack, cr, d, t0, t1, o, mk, nonfinite); break;
    default: break;
  }
  return nonfinite == 0;
}

void bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, load_bf16x16(in + i));
  if (i < n) {
    const __mmask16 m = tail16(n - i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, in + i)), 16)));
  }
}

#include "simd/dist_impl.h"

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels table{Level::avx512, "avx512", dot_f32, dot_f32_bf16, dot_bf16, dot_i8,
                             kPanel, score_panel_f32, bf16_to_f32, dist_f32, dist_bf16, dist_i8, axpy_f32};
  return table;
}

}  // namespace upper_fast::simd
