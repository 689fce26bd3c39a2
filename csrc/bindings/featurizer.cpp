// Bindings for the featurizer, StringIdMap and build_histories. Inputs are validated and turned
// into views under the GIL; the work runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "bindings/bindings.h"
#include "featurizer.h"
#include "history.h"
#include "id_map.h"
#include "parallel.h"
#include "unicode_norm.h"

namespace py = pybind11;

namespace upper_fast::bindings {
namespace {

std::string type_name(py::handle o) { return Py_TYPE(o.ptr())->tp_name; }

// UTF-8 view of a str (always valid) or bytes (validated later by the decoder). `what` names the
// argument in errors. The view lives as long as the object.
std::string_view text_view(py::handle o, const std::string& what, bool allow_bytes = true) {
  if (PyUnicode_Check(o.ptr())) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(o.ptr(), &size);
    if (data == nullptr) {
      PyErr_Clear();
      throw py::value_error(what + " is not encodable as UTF-8 (it holds a lone surrogate code point); "
                                   "clean it with s.encode('utf-8', 'replace').decode()");
    }
    return std::string_view(data, static_cast<std::size_t>(size));
  }
  if (allow_bytes && PyBytes_Check(o.ptr())) {
    return std::string_view(PyBytes_AS_STRING(o.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(o.ptr())));
  }
  throw py::type_error(what + " must be " + (allow_bytes ? "str or UTF-8 bytes" : "str") + ", got " + type_name(o));
}

// A tuple snapshot of a sequence of texts (holds a reference to every element while the GIL is
// released) and the UTF-8 views of its elements.
struct TextBatch {
  py::tuple items;
  std::vector<std::string_view> views;
};

TextBatch text_batch(py::handle seq, const char* name, bool allow_bytes = true) {
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr()))
    throw py::type_error(std::string(name) + " must be a sequence of texts, not a single " + type_name(seq) +
                         ": wrap it in a list");
  if (!PySequence_Check(seq.ptr()))
    throw py::type_error(std::string(name) + " must be a sequence (e.g. a list) of str, got " + type_name(seq) +
                         " (pyarrow arrays: call .to_pylist())");
  PyObject* t = PySequence_Tuple(seq.ptr());
  if (t == nullptr) throw py::error_already_set();
  TextBatch batch{py::reinterpret_steal<py::tuple>(t), {}};
  const std::size_t n = batch.items.size();
  batch.views.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    batch.views.push_back(text_view(batch.items[i], std::string(name) + "[" + std::to_string(i) + "]", allow_bytes));
  return batch;
}

template <class T>
py::array_t<T> checked_1d(py::handle obj, const char* name, const char* dtype_name);

// Views of an Arrow string column given as its offsets (int32 or int64, n + 1) and data (uint8)
// buffers; the arrays must outlive the views. Offsets are checked so no view leaves `data`.
template <class O>
std::vector<std::string_view> offset_views(const py::array& offsets, const char* data, std::size_t data_size) {
  const auto* o = static_cast<const O*>(offsets.data());
  const std::size_t n = static_cast<std::size_t>(offsets.size()) - 1;
  std::vector<std::string_view> views;
  views.reserve(n);
  if (o[0] < 0) throw py::value_error("offsets[0] must be >= 0");
  for (std::size_t i = 0; i < n; ++i) {
    if (o[i + 1] < o[i] || static_cast<std::size_t>(o[i + 1]) > data_size)
      throw py::value_error("offsets must be non-decreasing and within data; offsets[" + std::to_string(i + 1) +
                            "] = " + std::to_string(o[i + 1]) + " (data has " + std::to_string(data_size) + " bytes)");
    views.emplace_back(data + o[i], static_cast<std::size_t>(o[i + 1] - o[i]));
  }
  return views;
}

std::vector<std::string_view> arrow_views(py::handle offsets_obj, py::handle data_obj) {
  if (!py::isinstance<py::array>(offsets_obj) || !py::isinstance<py::array>(data_obj))
    throw py::type_error("offsets and data must be numpy arrays");
  auto offsets = py::reinterpret_borrow<py::array>(offsets_obj);
  auto data = checked_1d<std::uint8_t>(data_obj, "data", "uint8");
  if (offsets.ndim() != 1 || offsets.size() < 1 || !(offsets.flags() & py::array::c_style))
    throw py::value_error("offsets must be a 1-D C-contiguous array of n + 1 entries");
  const char* bytes = reinterpret_cast<const char*>(data.data());
  const auto size = static_cast<std::size_t>(data.size());
  if (py::array_t<std::int32_t>::check_(offsets)) return offset_views<std::int32_t>(offsets, bytes, size);
  if (py::array_t<std::int64_t>::check_(offsets)) return offset_views<std::int64_t>(offsets, bytes, size);
  throw py::type_error("offsets must have dtype int32 or int64, got " + py::str(offsets.dtype()).cast<std::string>());
}

// A writable C-contiguous int64 array of exactly `shape`, for outputs the caller preallocates.
std::int64_t* checked_out(py::handle obj, std::initializer_list<py::ssize_t> shape) {
  if (!py::isinstance<py::array>(obj) || !py::array_t<std::int64_t>::check_(obj))
    throw py::type_error("out must be an int64 numpy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!(arr.flags() & py::array::c_style) || !arr.writeable())
    throw py::value_error("out must be writable and C-contiguous: call np.ascontiguousarray");
  if (static_cast<std::size_t>(arr.ndim()) != shape.size() ||
      !std::equal(shape.begin(), shape.end(), arr.shape()))
    throw py::value_error("out has the wrong shape");
  return static_cast<std::int64_t*>(arr.mutable_data());
}

// Translates an invalid UTF-8 error into ValueError (also the default mapping, kept explicit).
template <class Fn>
auto with_utf8_errors(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const unicode::Utf8Error& e) {
    throw py::value_error(e.what());
  }
}

py::str to_py_str(const std::string& s) {
  return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "strict"));
}

std::size_t checked_threads(long long num_threads) {
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0 = all cores), got " + std::to_string(num_threads));
  return static_cast<std::size_t>(num_threads);
}

// A 1-D, C-contiguous array of exactly T, else a TypeError/ValueError that says the fix.
template <class T>
py::array_t<T> checked_1d(py::handle obj, const char* name, const char* dtype_name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array of " + dtype_name + ", got " + type_name(obj) +
                         ": call np.asarray(x, dtype=np." + dtype_name + ")");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!py::array_t<T>::check_(arr))
    throw py::type_error(std::string(name) + " must have dtype " + dtype_name + ", got " +
                         py::str(arr.dtype()).cast<std::string>() + ": call x.astype(np." + dtype_name + ")");
  if (arr.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got shape with " + std::to_string(arr.ndim()) + " dims");
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous: call np.ascontiguousarray");
  return py::reinterpret_borrow<py::array_t<T>>(arr);
}

void register_featurizer_class(py::module_& m) {
  py::class_<Featurizer>(m, "Featurizer", "Hashed word / bigram / char-trigram term ids (docs/featurizer.md).")
      .def(py::init<std::int64_t, std::int64_t, std::int64_t, bool>(), py::arg("word_buckets"), py::arg("bigram_buckets"),
           py::arg("trigram_buckets"), py::arg("stem_plurals") = false)
      .def_property_readonly("stem_plurals", &Featurizer::stem_plurals)
      .def_property_readonly("word_buckets", &Featurizer::word_buckets)
      .def_property_readonly("bigram_buckets", &Featurizer::bigram_buckets)
      .def_property_readonly("trigram_buckets", &Featurizer::trigram_buckets)
      .def_property_readonly("vocab_size", &Featurizer::vocab_size)
      .def(
          "normalize",
          [](const Featurizer& f, py::handle text) {
            const std::string_view v = text_view(text, "text");
            FeaturizerScratch scratch;
            std::string out;
            with_utf8_errors([&] { f.normalize(v, out, scratch); });
            return to_py_str(out);
          },
          py::arg("text"), "The normal form of one text (str or UTF-8 bytes).")
      .def(
          "normalize_many",
          [](const Featurizer& f, py::handle texts, long long num_threads) {
            TextBatch batch = text_batch(texts, "texts");
            const std::size_t threads = checked_threads(num_threads);
            std::vector<std::string> out(batch.views.size());
            {
              py::gil_scoped_release release;
              std::vector<FeaturizerScratch> scratch(resolve_threads(threads));
              parallel_for(out.size(), threads, 512, [&](std::size_t b, std::size_t e, std::size_t tid) {
                for (std::size_t i = b; i < e; ++i) {
                  try {
                    f.normalize(batch.views[i], out[i], scratch[tid]);
                  } catch (const unicode::Utf8Error& err) {
                    throw std::invalid_argument("texts[" + std::to_string(i) + "]: " + err.what());
                  }
                }
              });
            }
            py::list result(out.size());
            for (std::size_t i = 0; i < out.size(); ++i) result[i] = to_py_str(out[i]);
            return result;
          },
          py::arg("texts"), py::arg("num_threads") = 0, "The normal forms of a sequence of texts.")
      .def(
          "term_ids",
          [](const Featurizer& f, py::handle text) {
            const std::string_view v = text_view(text, "text");
            FeaturizerScratch scratch;
            std::vector<std::int64_t> ids;
            with_utf8_errors([&] { f.term_ids(v, ids, scratch); });
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(ids.size()));
            std::copy(ids.begin(), ids.end(), out.mutable_data());
            return out;
          },
          py::arg("text"), "All term ids of one text, untruncated: int64 (n_terms,).")
      .def(
          "featurize",
          [](const Featurizer& f, py::handle texts, long long max_terms, long long num_threads) {
            if (max_terms <= 0) throw py::value_error("max_terms must be >= 1, got " + std::to_string(max_terms));
            if (max_terms > (1 << 20)) throw py::value_error("max_terms must be <= 1048576, got " + std::to_string(max_terms));
            TextBatch batch = text_batch(texts, "texts");
            const std::size_t threads = checked_threads(num_threads);
            const std::size_t n = batch.views.size();
            py::array_t<std::int64_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(max_terms)});
            std::int64_t* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              f.featurize(batch.views.data(), n, static_cast<std::size_t>(max_terms), data, threads);
            }
            return out;
          },
          py::arg("texts"), py::arg("max_terms"), py::arg("num_threads") = 0,
          "int64 (len(texts), max_terms) term ids, zero-padded, truncated from the end.")
      .def(
          "featurize_arrow",
          [](const Featurizer& f, py::handle offsets, py::handle data, py::handle out, long long num_threads) {
            const std::vector<std::string_view> views = arrow_views(offsets, data);
            const std::size_t threads = checked_threads(num_threads);
            if (!py::isinstance<py::array>(out) || py::reinterpret_borrow<py::array>(out).ndim() != 2)
              throw py::value_error("out must be a 2-D int64 array (n, max_terms)");
            const py::ssize_t max_terms = py::reinterpret_borrow<py::array>(out).shape(1);
            if (max_terms <= 0) throw py::value_error("max_terms must be >= 1");
            std::int64_t* dst = checked_out(out, {static_cast<py::ssize_t>(views.size()), max_terms});
            py::gil_scoped_release release;
            f.featurize(views.data(), views.size(), static_cast<std::size_t>(max_terms), dst, threads);
          },
          py::arg("offsets"), py::arg("data"), py::arg("out"), py::arg("num_threads") = 0,
          "featurize over an Arrow string column's offsets and data buffers, into out (n, max_terms).");
}

void register_id_map(py::module_& m) {
  py::class_<StringIdMap>(m, "StringIdMap", "Immutable str -> row map; -1 for absent keys.")
      .def(py::init([](py::handle keys) {
             TextBatch batch = text_batch(keys, "keys", false);
             try {
               py::gil_scoped_release release;
               return new StringIdMap(batch.views);
             } catch (const DuplicateKeyError& e) {
               throw py::value_error("duplicate key " + py::repr(batch.items[e.second]).cast<std::string>() +
                                     " at positions " + std::to_string(e.first) + " and " + std::to_string(e.second) +
                                     ": keys must be unique");
             }
           }),
           py::arg("keys"))
      .def("__len__", &StringIdMap::size)
      .def(
          "get",
          [](const StringIdMap& map, py::handle key) { return map.find(text_view(key, "key", false)); },
          py::arg("key"), "The row of key, -1 if absent.")
      .def("__contains__",
           [](const StringIdMap& map, py::handle key) {
             return PyUnicode_Check(key.ptr()) && map.find(text_view(key, "key", false)) >= 0;
           })
      .def(
          "lookup",
          [](const StringIdMap& map, py::handle keys, long long num_threads) {
            TextBatch batch = text_batch(keys, "keys", false);
            const std::size_t threads = checked_threads(num_threads);
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(batch.views.size()));
            std::int64_t* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              map.lookup(batch.views.data(), batch.views.size(), data, threads);
            }
            return out;
          },
          py::arg("keys"), py::arg("num_threads") = 0, "Rows of keys: int64 (n,), -1 where absent.")
      .def(
          "lookup_arrow",
          [](const StringIdMap& map, py::handle offsets, py::handle data, py::handle out, long long num_threads) {
            const std::vector<std::string_view> views = arrow_views(offsets, data);
            const std::size_t threads = checked_threads(num_threads);
            std::int64_t* dst = checked_out(out, {static_cast<py::ssize_t>(views.size())});
            py::gil_scoped_release release;
            map.lookup(views.data(), views.size(), dst, threads);
          },
          py::arg("offsets"), py::arg("data"), py::arg("out"), py::arg("num_threads") = 0,
          "lookup over an Arrow string column's offsets and data buffers, into out (n,).")
      .def(
          "keys_at",
          [](const StringIdMap& map, py::handle rows) {
            auto r = checked_1d<std::int64_t>(rows, "rows", "int64");
            const std::int64_t* p = r.data();
            const auto n = static_cast<std::size_t>(r.size());
            const auto size = static_cast<std::int64_t>(map.size());
            for (std::size_t i = 0; i < n; ++i) {
              if (p[i] < 0 || p[i] >= size)
                throw py::index_error("row " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                                      " is outside the map's rows 0.." + std::to_string(size - 1));
              map.prefetch_offsets(static_cast<std::size_t>(p[i]));
            }
            for (std::size_t i = 0; i < n; ++i) map.prefetch_key(static_cast<std::size_t>(p[i]));
            py::list out(static_cast<py::ssize_t>(n));
            for (std::size_t i = 0; i < n; ++i) {
              const std::string_view key = map.key(static_cast<std::size_t>(p[i]));
              PyObject* str = PyUnicode_DecodeUTF8(key.data(), static_cast<Py_ssize_t>(key.size()), "strict");
              if (str == nullptr) throw py::error_already_set();
              PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), str);  // steals the reference
            }
            return out;
          },
          py::arg("rows"), "The keys of rows (int64 (n,)), in order: a list of str.")
      .def(
          "keys",
          [](const StringIdMap& map) {
            py::list out(map.size());
            for (std::size_t i = 0; i < map.size(); ++i) out[i] = to_py_str(std::string(map.key(i)));
            return out;
          },
          "The keys in row order.");
}

void register_histories(py::module_& m) {
  m.def(
      "build_histories",
      [](py::handle event_user, py::handle event_ts, py::handle hist_user, py::handle hist_ts, py::handle hist_product,
         py::handle hist_type, py::handle hist_query, long long n_products, long long n_queries, long long num_threads) {
        auto eu = checked_1d<std::int64_t>(event_user, "event_user", "int64");
        auto et = checked_1d<std::int64_t>(event_ts, "event_ts", "int64");
        auto hu = checked_1d<std::int64_t>(hist_user, "hist_user", "int64");
        auto ht = checked_1d<std::int64_t>(hist_ts, "hist_ts", "int64");
        auto hp = checked_1d<std::int64_t>(hist_product, "hist_product", "int64");
        auto hy = checked_1d<std::int8_t>(hist_type, "hist_type", "int8");
        auto hq = checked_1d<std::int64_t>(hist_query, "hist_query", "int64");
        if (et.size() != eu.size())
          throw py::value_error("event_ts has " + std::to_string(et.size()) + " rows but event_user has " +
                                std::to_string(eu.size()) + ": pass one timestamp per event");
        const py::ssize_t h = hu.size();
        const std::pair<const char*, py::ssize_t> lens[] = {
            {"hist_ts", ht.size()}, {"hist_product", hp.size()}, {"hist_type", hy.size()}, {"hist_query", hq.size()}};
        for (const auto& [name, len] : lens)
          if (len != h)
            throw py::value_error(std::string(name) + " has " + std::to_string(len) + " rows but hist_user has " +
                                  std::to_string(h) + ": all hist_* arrays must have one entry per log row");
        if (n_products < 0 || n_products > 4096)
          throw py::value_error("n_products must be in [0, 4096], got " + std::to_string(n_products));
        if (n_queries < 0 || n_queries > 4096)
          throw py::value_error("n_queries must be in [0, 4096], got " + std::to_string(n_queries));
        const std::size_t threads = checked_threads(num_threads);
        const auto n = static_cast<py::ssize_t>(eu.size());
        py::array_t<std::int64_t> products({n, static_cast<py::ssize_t>(n_products)});
        py::array_t<std::int8_t> types({n, static_cast<py::ssize_t>(n_products)});
        py::array_t<std::int64_t> queries({n, static_cast<py::ssize_t>(n_queries)});
        HistoryLog log{static_cast<std::size_t>(h), hu.data(), ht.data(), hp.data(), hy.data(), hq.data()};
        HistoryOutput out{static_cast<std::size_t>(n_products), static_cast<std::size_t>(n_queries),
                          products.mutable_data(), types.mutable_data(), queries.mutable_data()};
        {
          py::gil_scoped_release release;
          upper_fast::build_histories(static_cast<std::size_t>(n), eu.data(), et.data(), log, out, threads);
        }
        return py::make_tuple(products, types, queries);
      },
      py::arg("event_user"), py::arg("event_ts"), py::arg("hist_user"), py::arg("hist_ts"), py::arg("hist_product"),
      py::arg("hist_type"), py::arg("hist_query"), py::arg("n_products"), py::arg("n_queries"),
      py::arg("num_threads") = 0, "Per-event user histories strictly before each event (docs/featurizer.md).");
}

}  // namespace

void register_featurizer(py::module_& m) {
  register_featurizer_class(m);
  register_id_map(m);
  register_histories(m);
  m.def("unicode_version", [] { return std::string(unicode::unicode_version()); },
        "The Unicode version of the compiled normalisation tables.");
  m.def(
      "_nfkc_many",
      [](py::handle texts) {
        TextBatch batch = text_batch(texts, "texts");
        std::vector<std::string> out(batch.views.size());
        {
          py::gil_scoped_release release;
          unicode::Scratch scratch;
          for (std::size_t i = 0; i < out.size(); ++i) {
            try {
              unicode::nfkc(batch.views[i], out[i], scratch);
            } catch (const unicode::Utf8Error& err) {
              throw std::invalid_argument("texts[" + std::to_string(i) + "]: " + err.what());
            }
          }
        }
        py::list result(out.size());
        for (std::size_t i = 0; i < out.size(); ++i) result[i] = to_py_str(out[i]);
        return result;
      },
      py::arg("texts"), "NFKC of each text (for testing the tables against unicodedata).");
}

}  // namespace upper_fast::bindings
