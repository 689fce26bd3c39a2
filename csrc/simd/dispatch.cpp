#include "simd/dispatch.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace upper_fast::simd {

Level cpu_max_level() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni"))
    return Level::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Level::avx2;
  return Level::scalar;
}

const char* level_name(Level level) {
  switch (level) {
    case Level::avx512: return "avx512";
    case Level::avx2: return "avx2";
    default: return "scalar";
  }
}

const Kernels& for_level(Level level) {
  if (static_cast<int>(level) > static_cast<int>(cpu_max_level()))
    throw std::invalid_argument(std::string("SIMD level '") + level_name(level) +
                                "' is not supported by this CPU (best: " + level_name(cpu_max_level()) +
                                "); unset UPPER_FAST_SIMD or choose a lower level");
  switch (level) {
    case Level::avx512: return avx512_kernels();
    case Level::avx2: return avx2_kernels();
    default: return scalar_kernels();
  }
}

namespace {
const Kernels& resolve() {
  const char* env = std::getenv("UPPER_FAST_SIMD");
  if (env == nullptr || *env == '\0') return for_level(cpu_max_level());
  if (std::strcmp(env, "scalar") == 0) return for_level(Level::scalar);
  if (std::strcmp(env, "avx2") == 0) return for_level(Level::avx2);
  if (std::strcmp(env, "avx512") == 0) return for_level(Level::avx512);
  throw std::invalid_argument(std::string("UPPER_FAST_SIMD='") + env +
                              "' is not a SIMD level; use avx512, avx2 or scalar");
}
}  // namespace

const Kernels& active() {
  static const Kernels& table = resolve();
  return table;
}

}  // namespace upper_fast::simd
