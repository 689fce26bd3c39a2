// The Python module upper_fast._core. Each concern registers its own bindings (one file each).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "common.h"
#include "huge_pages.h"
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

  m.def(
      "advise_huge_pages",
      [](const py::array& a) {
        if (!(a.flags() & py::array::c_style))
          throw py::value_error("advise_huge_pages needs a C-contiguous array (np.ascontiguousarray)");
        return upper_fast::advise_huge_pages(a.data(), static_cast<std::size_t>(a.nbytes()));
      },
      py::arg("array"),
      "Best effort: back the array's memory with 2 MiB pages (MADV_HUGEPAGE + MADV_COLLAPSE) for random "
      "reads; True when the kernel accepted the hint. Arrays under 4 MiB are left alone.");

  upper_fast::bindings::register_kernels(m);
  upper_fast::bindings::register_index(m);
  upper_fast::bindings::register_featurizer(m);
  upper_fast::bindings::register_skipgram(m);
}
