// The Python module upper_fast._core. Each concern registers its own bindings (one file each).
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "common.h"
#include "simd/dispatch.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "upper_fast native core: SIMD kernels, batched top-k, hydration, thresholds, index, featurizer";
  m.attr("__version__") = UPPER_FAST_VERSION;

  // upper_fast.FormatError: a damaged, truncated or foreign file. An OSError, so callers that
  // already handle I/O failures handle it too.
  py::register_exception<upper_fast::FormatError>(m, "FormatError", PyExc_OSError);

  m.def("simd_level", [] { return std::string(upper_fast::simd::active().name); },
        "The SIMD level in use: 'avx512', 'avx2' or 'scalar' (UPPER_FAST_SIMD forces one).");
  m.def("cpu_simd_level", [] { return std::string(upper_fast::simd::level_name(upper_fast::simd::cpu_max_level())); },
        "The best SIMD level this CPU supports, ignoring UPPER_FAST_SIMD.");

  upper_fast::bindings::register_kernels(m);
  upper_fast::bindings::register_index(m);
  upper_fast::bindings::register_featurizer(m);
}
