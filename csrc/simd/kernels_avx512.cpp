// avx512 kernels (compiled with this ISA's flags only; see CMakeLists.txt).
// Skeleton: forwards to the scalar reference until the vector kernels land.
#include "simd/dispatch.h"

namespace upper_fast::simd {

const Kernels& avx512_kernels() {
  static const Kernels table = [] {
    Kernels k = scalar_kernels();
    k.level = Level::avx512;
    k.name = "avx512";
    return k;
  }();
  return table;
}

}  // namespace upper_fast::simd
