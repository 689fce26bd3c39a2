// avx2 kernels (compiled with this ISA's flags only; see CMakeLists.txt).
// Skeleton: forwards to the scalar reference until the vector kernels land.
#include "simd/dispatch.h"

namespace upper_fast::simd {

const Kernels& avx2_kernels() {
  static const Kernels table = [] {
    Kernels k = scalar_kernels();
    k.level = Level::avx2;
    k.name = "avx2";
    return k;
  }();
  return table;
}

}  // namespace upper_fast::simd
