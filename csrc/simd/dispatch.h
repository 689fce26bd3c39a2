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
};

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
