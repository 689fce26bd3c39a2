// SIMD kernel table, resolved once per process.
//
// Each instruction set lives in its own translation unit compiled with its own flags
// (kernels_scalar.cpp, kernels_avx2.cpp, kernels_avx512.cpp); nothing else in the core is compiled
// with ISA flags, so the library runs on any x86-64. The level is the best the CPU supports, or the
// one forced by UPPER_FAST_SIMD=avx512|avx2|scalar (forcing a level the CPU lacks is an error).
#pragma once
#include <cstddef>
#include <cstdint>

namespace upper_fast::simd {

enum class Level : int { scalar = 0, avx2 = 1, avx512 = 2 };

// bf16 is stored as the upper 16 bits of an IEEE float (uint16_t).
struct Kernels {
  Level level;
  const char* name;
  // <a, b> over n floats.
  float (*dot_f32)(const float* a, const float* b, std::size_t n);
  // <a, b> with a in f32 and b stored as bf16.
  float (*dot_f32_bf16)(const float* a, const std::uint16_t* b, std::size_t n);
  // <a, b> with both stored as bf16.
  float (*dot_bf16)(const std::uint16_t* a, const std::uint16_t* b, std::size_t n);
  // integer <a, b> over n int8 values (exact in int32 for n < 2^17).
  std::int32_t (*dot_i8)(const std::int8_t* a, const std::int8_t* b, std::size_t n);

  // Batched scoring micro-kernel (used by topk.cpp). A "panel" is `panel` queries packed
  // k-major: qpack[k * panel + lane] (zero in unused lanes), so one vector load gives one
  // coordinate of many queries and the candidate coordinate is broadcast; candidates are read
  // row-major as given, so they never need packing.
  std::size_t panel;
  // For the nc candidate rows cand[c * d .. c * d + d): out[c * panel + lane] = <query lane, row c>
  // and bit `lane` of mask[c] is set when that score > thr[lane] (thr has `panel` entries).
  // Returns false when any score is NaN or +-inf (non-finite input or float overflow).
  bool (*score_panel_f32)(const float* qpack, const float* cand, std::size_t nc, std::size_t d,
                          const float* thr, float* out, std::uint32_t* mask);
  // out[i] = bf16_to_float(in[i]) for n values (exact widening).
  void (*bf16_to_f32)(const std::uint16_t* in, float* out, std::size_t n);

  // hnswlib distance functions (hnswlib::DISTFUNC<float>): -<a, b> over the stored f32, bf16 and
  // i8 (+ trailing float scale) layouts; `param` points to the dimension (std::size_t). The kernel
  // is inlined into each, so a distance costs one indirect call (csrc/simd/dist_impl.h).
  float (*dist_f32)(const void* a, const void* b, const void* param);
  float (*dist_bf16)(const void* a, const void* b, const void* param);
  float (*dist_i8)(const void* a, const void* b, const void* param);
  // y[i] += a * x[i] for n floats (the SGD update of the item-interaction trainer).
  void (*axpy_f32)(float a, const float* x, float* y, std::size_t n);
};

// Largest `panel` of any table; mask bits are uint32_t.
constexpr std::size_t kMaxPanel = 32;

// The kernel table in use (thread-safe, resolved on first call).
const Kernels& active();
// The table for one level; throws std::invalid_argument if this CPU cannot run it.
const Kernels& for_level(Level level);
// Best level the CPU supports (ignores the environment override).
Level cpu_max_level();
const char* level_name(Level level);

// Per-ISA tables (defined in the per-ISA sources).
const Kernels& scalar_kernels();
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();

// float <-> bf16 (round to nearest even; NaN stays NaN).
std::uint16_t float_to_bf16(float x);
float bf16_to_float(std::uint16_t x);

}  // namespace upper_fast::simd
