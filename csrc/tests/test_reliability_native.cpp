// Reliability checks of the native core, run under ASan+UBSan by scripts/sanitize.sh:
// every SIMD level the CPU has against the scalar oracle at odd sizes and unaligned pointers,
// special values (NaN, inf, subnormal, int8 extremes), bf16 conversion. Exits nonzero on failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "simd/dispatch.h"

namespace {

int g_failures = 0;

#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (!(cond)) {                                                    \
      ++g_failures;                                                   \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                              \
      std::fprintf(stderr, "\n");                                     \
    }                                                                 \
  } while (0)

using upper_fast::simd::Kernels;
using upper_fast::simd::Level;

std::vector<const Kernels*> available_levels() {
  std::vector<const Kernels*> out;
  for (Level l : {Level::scalar, Level::avx2, Level::avx512}) {
    if (static_cast<int>(l) <= static_cast<int>(upper_fast::simd::cpu_max_level()))
      out.push_back(&upper_fast::simd::for_level(l));
  }
  return out;
}

bool approx_equal(float got, float want, std::size_t n) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  float tol = 1e-5f * static_cast<float>(n + 1) * std::max(1.f, std::fabs(want));
  return std::fabs(got - want) <= tol;
}

void test_dot_kernels_odd_sizes() {
  const Kernels& ref = upper_fast::simd::scalar_kernels();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uf(-1.f, 1.f);
  std::uniform_int_distribution<int> ui(-128, 127);
  for (const Kernels* k : available_levels()) {
    for (std::size_t n = 0; n <= 131; ++n) {
      for (std::size_t shift : {0u, 1u, 3u}) {
        // Allocate exactly shift+n so the last element is the last byte of the allocation.
        std::vector<float> fa(n + shift), fb(n + shift);
        std::vector<std::uint16_t> ha(n + shift), hb(n + shift);
        std::vector<std::int8_t> ia(n + shift), ib(n + shift);
        for (std::size_t i = 0; i < n + shift; ++i) {
          fa[i] = uf(rng);
          fb[i] = uf(rng);
          ha[i] = upper_fast::simd::float_to_bf16(uf(rng));
          hb[i] = upper_fast::simd::float_to_bf16(uf(rng));
          ia[i] = static_cast<std::int8_t>(ui(rng));
          ib[i] = static_cast<std::int8_t>(ui(rng));
        }
        const float* a = fa.data() + shift;
        const float* b = fb.data() + shift;
        const std::uint16_t* x = ha.data() + shift;
        const std::uint16_t* y = hb.data() + shift;
        const std::int8_t* p = ia.data() + shift;
        const std::int8_t* q = ib.data() + shift;
        float want = ref.dot_f32(a, b, n), got = k->dot_f32(a, b, n);
        CHECK(approx_equal(got, want, n), "%s dot_f32 n=%zu shift=%zu got %g want %g", k->name, n, shift, got, want);
        want = ref.dot_f32_bf16(a, y, n);
        got = k->dot_f32_bf16(a, y, n);
        CHECK(approx_equal(got, want, n), "%s dot_f32_bf16 n=%zu got %g want %g", k->name, n, got, want);
        want = ref.dot_bf16(x, y, n);
        got = k->dot_bf16(x, y, n);
        CHECK(approx_equal(got, want, n), "%s dot_bf16 n=%zu got %g want %g", k->name, n, got, want);
        std::int32_t iw = ref.dot_i8(p, q, n), ig = k->dot_i8(p, q, n);
        CHECK(iw == ig, "%s dot_i8 n=%zu got %d want %d", k->name, n, ig, iw);
      }
    }
  }
}

void test_dot_special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float sub = std::numeric_limits<float>::denorm_min();
  for (const Kernels* k : available_levels()) {
    for (std::size_t n : {1u, 7u, 8u, 9u, 16u, 17u, 33u, 65u}) {
      std::vector<float> a(n, 1.f), b(n, 1.f);
      a[n - 1] = nan;
      CHECK(std::isnan(k->dot_f32(a.data(), b.data(), n)), "%s NaN must propagate n=%zu", k->name, n);
      a[n - 1] = inf;
      float r = k->dot_f32(a.data(), b.data(), n);
      CHECK(std::isinf(r) && r > 0, "%s +inf must propagate n=%zu got %g", k->name, n, r);
      std::fill(a.begin(), a.end(), sub);
      r = k->dot_f32(a.data(), b.data(), n);
      CHECK(std::isfinite(r) && r >= 0.f, "%s subnormals n=%zu got %g", k->name, n, r);
    }
    // int8 extremes: (-128)*(-128) summed is exact in int32 for n < 2^17.
    const std::size_t n = (1u << 17) - 1;
    std::vector<std::int8_t> a(n, -128), b(n, -128);
    std::int32_t want = static_cast<std::int32_t>(n) * 16384;
    CHECK(k->dot_i8(a.data(), b.data(), n) == want, "%s dot_i8 extremes", k->name);
    std::fill(b.begin(), b.end(), 127);
    CHECK(k->dot_i8(a.data(), b.data(), n) == -static_cast<std::int32_t>(n) * 16256, "%s dot_i8 mixed extremes",
          k->name);
  }
}

void test_bf16_conversion() {
  using upper_fast::simd::bf16_to_float;
  using upper_fast::simd::float_to_bf16;
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))), "NaN");
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::signaling_NaN()))), "sNaN");
  CHECK(bf16_to_float(float_to_bf16(inf)) == inf, "+inf");
  CHECK(bf16_to_float(float_to_bf16(-inf)) == -inf, "-inf");
  CHECK(bf16_to_float(float_to_bf16(0.f)) == 0.f, "zero");
  CHECK(bf16_to_float(float_to_bf16(1.f)) == 1.f, "one");
  // Largest finite float rounds up to +inf in bf16 (round to nearest even), never to NaN.
  CHECK(!std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::max()))), "max");
  // Every bf16 bit pattern survives a round trip through float (NaNs stay NaN).
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    float f = bf16_to_float(static_cast<std::uint16_t>(h));
    std::uint16_t back = float_to_bf16(f);
    if (std::isnan(f))
      CHECK(std::isnan(bf16_to_float(back)), "NaN pattern %04x", h);
    else
      CHECK(back == h, "pattern %04x -> %04x", h, back);
  }
}

void test_for_level_rejects_unsupported() {
  if (upper_fast::simd::cpu_max_level() == Level::avx512) return;
  bool threw = false;
  try {
    upper_fast::simd::for_level(Level::avx512);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "for_level(avx512) on a CPU without it must throw std::invalid_argument");
}

}  // namespace

int main() {
  test_dot_kernels_odd_sizes();
  test_dot_special_values();
  test_bf16_conversion();
  test_for_level_rejects_unsupported();
  if (g_failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_reliability_native: all checks passed (SIMD levels: %zu)\n", available_levels().size());
  return 0;
}
