// Scalar reference kernels: the oracle every SIMD kernel is tested against.
#include <cstring>

#include "simd/dispatch.h"

namespace upper_fast::simd {

std::uint16_t float_to_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

float bf16_to_float(std::uint16_t x) {
  std::uint32_t u = static_cast<std::uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

namespace {

float dot_f32(const float* a, const float* b, std::size_t n) {
  float s = 0.f;
  for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_f32(float a, const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

float dot_f32_bf16(const float* a, const std::uint16_t* b, std::size_t n) {
  float s = 0.f;
  for (std::size_t i = 0; i < n; ++i) s += a[i] * bf16_to_float(b[i]);
  return s;
}

float dot_bf16(const std::uint16_t* a, const std::uint16_t* b, std::size_t n) {
  float s = 0.f;
  for (std::size_t i = 0; i < n; ++i) s += bf16_to_float(a[i]) * bf16_to_float(b[i]);
  return s;
}

std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) {
  std::int32_t s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<std::int32_t>(a[i]) * b[i];
  return s;
}

constexpr std::size_t kPanel = 8;

bool score_panel_f32(const float* qpack, const float* cand, std::size_t nc, std::size_t d,
                     const float* thr, float* out, std::uint32_t* mask) {
  bool finite = true;
  for (std::size_t c = 0; c < nc; ++c) {
    const float* row = cand + c * d;
    float acc[kPanel] = {};
    for (std::size_t k = 0; k < d; ++k)
      for (std::size_t l = 0; l < kPanel; ++l) acc[l] += qpack[k * kPanel + l] * row[k];
    std::uint32_t bits = 0;
    for (std::size_t l = 0; l < kPanel; ++l) {
      out[c * kPanel + l] = acc[l];
      finite = finite && (acc[l] - acc[l] == 0.f);  // false for NaN and +-inf
      if (acc[l] > thr[l]) bits |= 1u << l;
    }
    mask[c] = bits;
  }
  return finite;
}

void bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

#include "simd/dist_impl.h"

const Kernels kTable{Level::scalar, "scalar", dot_f32, dot_f32_bf16, dot_bf16, dot_i8,
                     kPanel, score_panel_f32, bf16_to_f32, dist_f32, dist_bf16, dist_i8, axpy_f32};

}  // namespace

const Kernels& scalar_kernels() { return kTable; }

}  // namespace upper_fast::simd
