// Python bindings of upper_fast::Index (wrapped by python/upper_fast/index.py).
// Arrays are checked here under the GIL (dtype, shape, contiguity; never converted), then the work
// runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>

#include "bindings/bindings.h"
#include "common.h"
#include "index.h"

namespace py = pybind11;

namespace upper_fast::bindings {

namespace {

template <class T>
py::array checked_array(const py::handle& obj, const char* name, const char* dtype_name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array of " + dtype_name + ", got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))) + ": call np.asarray(" + name +
                         ", dtype=np." + dtype_name + ")");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(arr))
    throw py::type_error(std::string(name) + " must have dtype " + dtype_name + ", got " +
                         std::string(py::str(arr.dtype())) + ": call " + name + ".astype(np." + dtype_name + ")");
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous: call np.ascontiguousarray(" + name + ")");
  return arr;
}

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array checked_ids(const py::handle& obj, const char* name) {
  py::array ids = checked_array<std::int64_t>(obj, name, "int64");
  if (ids.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D (n,), got shape " + shape_str(ids));
  return ids;
}

py::dict header_dict(const index_io::IndexHeader& h) {
  py::dict d;
  d["format_version"] = h.version;
  d["dtype"] = storage_type_name(static_cast<StorageType>(h.dtype));
  d["dim"] = h.dim;
  d["M"] = h.M;
  d["ef_construction"] = h.ef_construction;
  d["ef"] = h.ef;
  d["rescore_factor"] = h.rescore_permille / 1000.0;
  d["seed"] = h.seed;
  d["count"] = h.count;
  d["live"] = h.live;
  d["payload_size"] = h.payload_size;
  d["payload_checksum"] = h.payload_checksum;
  return d;
}

// File names are bytes to the OS: os.fsencode keeps undecodable names (surrogate escapes) intact.
std::string fspath(const py::object& path) {
  py::object p = py::module_::import("os").attr("fspath")(path);
  if (!py::isinstance<py::str>(p) && !py::isinstance<py::bytes>(p))
    throw py::type_error("path must be a str, bytes or os.PathLike");
  return py::module_::import("os").attr("fsencode")(p).cast<std::string>();
}

// Bounds that keep a typo from becoming a multi-GB allocation: results are (m, k) and the beam
// holds ef candidates.
constexpr std::int64_t kMaxK = std::int64_t{1} << 20;
constexpr std::int64_t kMaxEf = std::int64_t{1} << 24;

}  // namespace

void register_index(py::module_& m) {
  // FormatError is translated by module.cpp; I/O failures keep their errno here.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const index_io::IoError& e) {
      // OSError(errno, message, filename) picks the subclass (FileNotFoundError, PermissionError...).
      py::object exc = py::handle(PyExc_OSError)(e.err(), e.what(), e.path());
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

  py::class_<Index>(m, "_Index", "Native HNSW index; use upper_fast.Index.")
      .def(py::init([](std::size_t dim, const std::string& dtype, std::size_t M, std::size_t ef_construction,
                       std::uint64_t seed) {
             return std::make_unique<Index>(dim, parse_storage_type(dtype), M, ef_construction, seed);
           }),
           py::arg("dim"), py::arg("dtype") = "f32", py::arg("M") = 16, py::arg("ef_construction") = 200,
           py::arg("seed") = 0)
      .def(
          "add",
          [](Index& self, const py::object& ids_obj, const py::object& vec_obj, std::size_t num_threads, bool replace) {
            py::array ids = checked_ids(ids_obj, "ids");
            py::array vec = checked_array<float>(vec_obj, "vectors", "float32");
            if (vec.ndim() != 2 || static_cast<std::size_t>(vec.shape(1)) != self.dim())
              throw py::value_error("vectors must have shape (n, dim) = (n, " + std::to_string(self.dim()) +
                                    "), got " + shape_str(vec));
            if (vec.shape(0) != ids.shape(0))
              throw py::value_error("ids and vectors disagree: " + std::to_string(ids.shape(0)) + " ids for " +
                                    std::to_string(vec.shape(0)) + " vectors");
            const auto* id_ptr = static_cast<const std::int64_t*>(ids.data());
            const auto* vec_ptr = static_cast<const float*>(vec.data());
            const auto n = static_cast<std::size_t>(ids.shape(0));
            py::gil_scoped_release release;
            self.add(id_ptr, vec_ptr, n, replace, num_threads);
          },
          py::arg("ids"), py::arg("vectors"), py::arg("num_threads") = 1, py::arg("replace") = false)
      .def(
          "search",
          [](const Index& self, const py::object& q_obj, std::int64_t k, std::int64_t ef, const py::object& filter,
             std::size_t num_threads) {
            py::array q = checked_array<float>(q_obj, "queries", "float32");
            if (k <= 0) throw py::value_error("k must be >= 1, got " + std::to_string(k));
            if (ef < 0) throw py::value_error("ef must be >= 1, got " + std::to_string(ef));
            if (k > kMaxK)
              throw py::value_error("k=" + std::to_string(k) + " is above the limit of " + std::to_string(kMaxK) +
                                    " (the index holds " + std::to_string(self.size()) + " ids); ask for fewer hits");
            if (ef > kMaxEf)
              throw py::value_error("ef=" + std::to_string(ef) + " is above the limit of " + std::to_string(kMaxEf) +
                                    "; a beam wider than the index gains nothing");
            const bool single = q.ndim() == 1;
            if ((q.ndim() != 1 && q.ndim() != 2) || static_cast<std::size_t>(q.shape(q.ndim() - 1)) != self.dim())
              throw py::value_error("queries must have shape (dim,) or (m, dim) with dim = " +
                                    std::to_string(self.dim()) + ", got " + shape_str(q));
            const std::size_t m = single ? 1 : static_cast<std::size_t>(q.shape(0));
            std::optional<IdFilter> f;
            py::array keep;  // keeps a mask alive while the GIL is released
            if (!filter.is_none()) {
              if (!py::isinstance<py::array>(filter))
                throw py::type_error("filter must be a numpy int64 array of allowed ids or a numpy bool mask over ids");
              auto fa = py::reinterpret_borrow<py::array>(filter);
              if (py::isinstance<py::array_t<bool>>(fa)) {
                keep = checked_array<bool>(fa, "filter", "bool_");
                if (keep.ndim() != 1) throw py::value_error("a filter mask must be 1-D, got shape " + shape_str(keep));
                f = IdFilter::mask(static_cast<const std::uint8_t*>(keep.data()), static_cast<std::size_t>(keep.shape(0)));
              } else if (py::isinstance<py::array_t<std::int64_t>>(fa)) {
                keep = checked_ids(fa, "filter");
                f = IdFilter::allow_list(static_cast<const std::int64_t*>(keep.data()),
                                         static_cast<std::size_t>(keep.shape(0)));
              } else {
                throw py::type_error("filter must have dtype int64 (allowed ids) or bool (mask over ids), got " +
                                     std::string(py::str(fa.dtype())));
              }
            }
            const auto kk = static_cast<std::size_t>(k);
            py::array_t<std::int64_t> ids({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(kk)});
            py::array_t<float> scores({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(kk)});
            py::array_t<std::int64_t> counts(static_cast<py::ssize_t>(m));
            const auto* qp = static_cast<const float*>(q.data());
            std::int64_t* ip = ids.mutable_data();
            float* sp = scores.mutable_data();
            std::int64_t* cp = counts.mutable_data();
            {
              py::gil_scoped_release release;
              self.search(qp, m, kk, static_cast<std::size_t>(ef), f ? &*f : nullptr, num_threads, ip, sp, cp);
            }
            return py::make_tuple(ids, scores, counts);
          },
          py::arg("queries"), py::arg("k"), py::arg("ef") = 0, py::arg("filter") = py::none(),
          py::arg("num_threads") = 1)
      .def(
          "mark_deleted",
          [](Index& self, const py::object& ids_obj) {
            py::array ids = checked_ids(ids_obj, "ids");
            const auto* p = static_cast<const std::int64_t*>(ids.data());
            const auto n = static_cast<std::size_t>(ids.shape(0));
            py::gil_scoped_release release;
            self.mark_deleted(p, n);
          },
          py::arg("ids"))
      .def("__contains__", &Index::contains)
      .def("__len__", &Index::size)
      .def_property_readonly("dim", &Index::dim)
      .def_property_readonly("dtype", [](const Index& self) { return storage_type_name(self.dtype()); })
      .def_property_readonly("M", &Index::M)
      .def_property_readonly("ef_construction", &Index::ef_construction)
      .def_property_readonly("seed", &Index::seed)
      .def_property_readonly("capacity", &Index::capacity)
      .def_property("ef", &Index::ef, [](Index& self, std::int64_t ef) {
        if (ef < 1) throw py::value_error("ef must be >= 1, got " + std::to_string(ef));
        self.set_ef(static_cast<std::size_t>(ef));
      })
      .def_property("rescore_factor", &Index::rescore_factor, &Index::set_rescore_factor)
      .def("memory_bytes", &Index::memory_bytes)
      .def("save", [](const Index& self, const py::object& path) {
        std::string p = fspath(path);
        py::gil_scoped_release release;
        self.save(p);
      })
      .def_static("load", [](const py::object& path) {
        std::string p = fspath(path);
        py::gil_scoped_release release;
        return Index::load(p);
      })
      .def_static("read_header", [](const py::object& path) {
        std::string p = fspath(path);
        index_io::IndexHeader h;
        {
          py::gil_scoped_release release;
          h = Index::read_header(p);
        }
        return header_dict(h);
      });
}

}  // namespace upper_fast::bindings
