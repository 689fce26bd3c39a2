// Bindings for the skip-gram SGD pass (item-interaction embeddings). Arrays are validated under the
// GIL (dtype, shape, C-contiguity, writeability, every index in range: never a silent copy), then the
// pass runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "bindings/bindings.h"
#include "skipgram.h"

namespace py = pybind11;

namespace upper_fast::bindings {
namespace {

py::array checked(const py::object& obj, const std::string& name, bool is_float, int ndim, bool writeable) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + " must be a numpy.ndarray (got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))) + ")");
  auto a = py::reinterpret_borrow<py::array>(obj);
  const bool ok = is_float ? a.dtype().is(py::dtype::of<float>()) : a.dtype().is(py::dtype::of<std::int64_t>());
  const char* want = is_float ? "float32" : "int64";
  if (!ok)
    throw py::type_error(name + " must have dtype " + want + " (got " + std::string(py::str(a.dtype())) +
                         "): convert explicitly, e.g. " + name + ".astype(np." + want + ")");
  if (a.ndim() != ndim)
    throw py::value_error(name + " must be " + std::to_string(ndim) + "-D (got " + std::to_string(a.ndim()) + "-D)");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(name + " must be C-contiguous: call np.ascontiguousarray(" + name + ")");
  if (writeable && !a.writeable()) throw py::value_error(name + " must be writeable (it is updated in place)");
  return a;
}

const std::int64_t* ids(const py::array& a) { return static_cast<const std::int64_t*>(a.data()); }

void check_range(const py::array& a, const std::string& name, std::int64_t lo, std::int64_t hi) {
  const std::int64_t* p = ids(a);
  for (py::ssize_t i = 0; i < a.size(); ++i)
    if (p[i] < lo || p[i] >= hi)
      throw py::value_error(name + " holds " + std::to_string(p[i]) + " at flat index " + std::to_string(i) +
                            ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

double skipgram_sgd(const py::object& input_obj, const py::object& output_obj, const py::object& subwords_obj,
                    const py::object& terms_obj, const py::object& centers_obj, const py::object& rows_obj,
                    const py::object& offsets_obj, const py::object& targets_obj, const py::object& negatives_obj,
                    double lr_start, double lr_end, std::size_t num_threads) {
  py::array input = checked(input_obj, "input", true, 2, true);
  py::array output = checked(output_obj, "output", true, 2, true);
  py::array terms = checked(terms_obj, "title_terms", false, 2, false);
  py::array centers = checked(centers_obj, "centers", false, 1, false);
  py::array rows = checked(rows_obj, "center_rows", false, 1, false);
  py::array offsets = checked(offsets_obj, "group_offsets", false, 1, false);
  py::array targets = checked(targets_obj, "targets", false, 1, false);
  py::array negatives = checked(negatives_obj, "negatives", false, 2, false);
  const std::size_t n_tokens = static_cast<std::size_t>(input.shape(0)), d = static_cast<std::size_t>(input.shape(1));
  if (output.shape(0) != input.shape(0) || output.shape(1) != input.shape(1))
    throw py::value_error("input and output must have the same shape (" + std::to_string(input.shape(0)) + ", " +
                          std::to_string(input.shape(1)) + ")");
  if (overlaps(input, output)) throw py::value_error("input and output must not share memory");
  float* sub = nullptr;
  std::size_t n_buckets = 0;
  if (!subwords_obj.is_none()) {
    py::array subwords = checked(subwords_obj, "subwords", true, 2, true);
    if (static_cast<std::size_t>(subwords.shape(1)) != d)
      throw py::value_error("subwords has dimension " + std::to_string(subwords.shape(1)) + ", input has " +
                            std::to_string(d));
    if (overlaps(subwords, input) || overlaps(subwords, output))
      throw py::value_error("subwords must not share memory with input or output");
    n_buckets = static_cast<std::size_t>(subwords.shape(0));
    check_range(terms, "title_terms", 0, static_cast<std::int64_t>(n_buckets));
    sub = static_cast<float*>(subwords.mutable_data());
  }
  const std::size_t n_groups = static_cast<std::size_t>(centers.shape(0));
  if (static_cast<std::size_t>(rows.shape(0)) != n_groups || static_cast<std::size_t>(offsets.shape(0)) != n_groups + 1)
    throw py::value_error("centers, center_rows and group_offsets must have n_groups, n_groups and n_groups + 1 "
                          "entries (got " + std::to_string(centers.shape(0)) + ", " + std::to_string(rows.shape(0)) +
                          ", " + std::to_string(offsets.shape(0)) + ")");
  const std::int64_t n_pairs = targets.shape(0);
  if (negatives.shape(0) != n_pairs)
    throw py::value_error("negatives must have one row per target (" + std::to_string(negatives.shape(0)) +
                          " rows for " + std::to_string(n_pairs) + " targets)");
  const std::int64_t* off = ids(offsets);
  if (off[0] != 0 || off[n_groups] != n_pairs)
    throw py::value_error("group_offsets must start at 0 and end at the number of targets (" + std::to_string(n_pairs) + ")");
  for (std::size_t g = 0; g < n_groups; ++g)
    if (off[g + 1] < off[g]) throw py::value_error("group_offsets must be non-decreasing (at " + std::to_string(g) + ")");
  const auto v = static_cast<std::int64_t>(n_tokens);
  check_range(centers, "centers", 0, v);
  check_range(rows, "center_rows", -1, sub != nullptr ? static_cast<std::int64_t>(terms.shape(0)) : INT64_MAX);
  check_range(targets, "targets", 0, v);
  check_range(negatives, "negatives", -1, v);
  if (!std::isfinite(lr_start) || !std::isfinite(lr_end) || lr_start < 0 || lr_end < 0)
    throw py::value_error("lr_start and lr_end must be finite and >= 0");
  SkipgramPairs p{ids(centers), ids(rows), off, ids(targets), ids(negatives), n_groups,
                  static_cast<std::size_t>(negatives.shape(1))};
  SkipgramTables t{static_cast<float*>(input.mutable_data()), static_cast<float*>(output.mutable_data()), sub,
                   ids(terms), n_tokens, d, n_buckets, static_cast<std::size_t>(terms.shape(0)),
                   static_cast<std::size_t>(terms.shape(1))};
  py::gil_scoped_release release;
  return upper_fast::skipgram_sgd(p, t, static_cast<float>(lr_start), static_cast<float>(lr_end), num_threads);
}

}  // namespace

void register_skipgram(py::module_& m) {
  m.def("skipgram_sgd", &skipgram_sgd, py::arg("input"), py::arg("output"), py::arg("subwords"),
        py::arg("title_terms"), py::arg("centers"), py::arg("center_rows"), py::arg("group_offsets"),
        py::arg("targets"), py::arg("negatives"), py::arg("lr_start"), py::arg("lr_end"), py::arg("num_threads") = 0,
        "One SGD pass of skip-gram with negative sampling over pairs grouped by center (hogwild over "
        "num_threads threads, 0 = all cores; GIL released); updates input, output and subwords in place and "
        "returns the summed loss. See csrc/skipgram.h.");
}

}  // namespace upper_fast::bindings
