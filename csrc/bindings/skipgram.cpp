// Bindings for the skip-gram SGD passes (item-interaction embeddings). Arrays are validated under the
// GIL (dtype, shape, C-contiguity, writeability, every index in range: never a silent copy), then the
// pass runs with the GIL released. SkipgramCorpus copies its arrays in once, checked, so the passes
// that draw from it need only check the tables and the order.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "skipgram.h"
#include "skipgram_corpus.h"

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

// The optional subword table: float32 (n_buckets, d), writeable, apart from the input and output tables.
py::array checked_subwords(const py::object& obj, std::size_t d, const py::array& input, const py::array& output) {
  py::array subwords = checked(obj, "subwords", true, 2, true);
  if (static_cast<std::size_t>(subwords.shape(1)) != d)
    throw py::value_error("subwords has dimension " + std::to_string(subwords.shape(1)) + ", input has " +
                          std::to_string(d));
  if (overlaps(subwords, input) || overlaps(subwords, output))
    throw py::value_error("subwords must not share memory with input or output");
  return subwords;
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
    py::array subwords = checked_subwords(subwords_obj, d, input, output);
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

std::vector<std::int64_t> copied(const py::array& a) {
  const std::int64_t* p = ids(a);
  return std::vector<std::int64_t>(p, p + a.size());
}

void check_length(const py::array& a, const std::string& name, std::size_t n, const std::string& of) {
  if (static_cast<std::size_t>(a.shape(0)) != n)
    throw py::value_error(name + " must have " + std::to_string(n) + " rows (" + of + "), got " +
                          std::to_string(a.shape(0)));
}

SkipgramCorpus make_corpus(const py::object& tokens_obj, const py::object& offsets_obj, const py::object& rows_obj,
                           const py::object& terms_obj, const py::object& typed_obj, const py::object& viewed_obj,
                           const py::object& start_obj, const py::object& size_obj, const py::object& slot_obj,
                           const py::object& members_obj) {
  py::array tokens = checked(tokens_obj, "tokens", false, 1, false);
  py::array offsets = checked(offsets_obj, "session_offsets", false, 1, false);
  py::array rows = checked(rows_obj, "token_rows", false, 1, false);
  py::array terms = checked(terms_obj, "title_terms", false, 2, false);
  py::array typed = checked(typed_obj, "typed", false, 2, false);
  py::array viewed = checked(viewed_obj, "only_viewed", false, 1, false);
  py::array start = checked(start_obj, "category_start", false, 1, false);
  py::array size = checked(size_obj, "category_size", false, 1, false);
  py::array slot = checked(slot_obj, "category_slot", false, 1, false);
  py::array members = checked(members_obj, "category_members", false, 1, false);
  const auto n_vocab = static_cast<std::size_t>(rows.shape(0));
  const auto n_positions = static_cast<std::size_t>(tokens.shape(0));
  const auto v = static_cast<std::int64_t>(n_vocab);
  if (n_vocab == 0 || n_positions == 0)
    throw py::value_error("a skip-gram corpus needs at least one token and one vocabulary entry (token_rows)");
  check_range(tokens, "tokens", 0, v);
  if (offsets.shape(0) < 1) throw py::value_error("session_offsets must have n_sessions + 1 >= 1 entries");
  const std::int64_t* off = ids(offsets);
  const auto n_sessions = static_cast<std::size_t>(offsets.shape(0) - 1);
  if (off[0] != 0 || off[n_sessions] != static_cast<std::int64_t>(n_positions))
    throw py::value_error("session_offsets must start at 0 and end at the number of tokens (" +
                          std::to_string(n_positions) + ")");
  for (std::size_t g = 0; g < n_sessions; ++g)
    if (off[g + 1] < off[g]) throw py::value_error("session_offsets must be non-decreasing (at " + std::to_string(g) + ")");
  check_range(rows, "token_rows", -1, terms.shape(0) > 0 ? terms.shape(0) : INT64_MAX);
  check_range(terms, "title_terms", 0, INT64_MAX);
  check_length(typed, "typed", n_positions, "one per token");
  check_range(typed, "typed", -1, v);
  check_length(viewed, "only_viewed", n_positions, "one per token");
  check_range(viewed, "only_viewed", 0, 2);
  check_length(start, "category_start", n_vocab, "one per vocabulary entry");
  check_length(size, "category_size", n_vocab, "one per vocabulary entry");
  check_length(slot, "category_slot", n_vocab, "one per vocabulary entry");
  check_range(members, "category_members", 0, v);
  const auto m = static_cast<std::int64_t>(members.shape(0));
  for (std::size_t i = 0; i < n_vocab; ++i) {
    const std::int64_t a = ids(start)[i], n = ids(size)[i], own = ids(slot)[i];
    if (n < 0 || a < 0 || a > m - n)
      throw py::value_error("category " + std::to_string(i) + ": start " + std::to_string(a) + " and size " +
                            std::to_string(n) + " fall outside category_members (" + std::to_string(m) + ")");
    if (own < -1 || own >= std::max<std::int64_t>(n, 0))
      throw py::value_error("category_slot holds " + std::to_string(own) + " at " + std::to_string(i) +
                            ", outside [-1, category_size = " + std::to_string(n) + ")");
  }
  SkipgramCorpus c;
  c.tokens = copied(tokens);
  c.session_offsets = copied(offsets);
  c.token_rows = copied(rows);
  c.title_terms = copied(terms);
  c.typed = copied(typed);
  const std::int64_t* ov = ids(viewed);
  c.only_viewed.assign(ov, ov + n_positions);
  c.category_start = copied(start);
  c.category_size = copied(size);
  c.category_slot = copied(slot);
  c.category_members = copied(members);
  c.n_vocab = n_vocab;
  c.n_typed = static_cast<std::size_t>(typed.shape(1));
  c.n_rows = static_cast<std::size_t>(terms.shape(0));
  c.max_terms = static_cast<std::size_t>(terms.shape(1));
  c.finish();
  return c;
}

SkipgramSampling sampling(std::size_t window, std::size_t random_negatives, bool typed, std::size_t category_negatives,
                          std::uint64_t seed, std::uint64_t epoch) {
  if (window < 1 || window > (1u << 20)) throw py::value_error("window must be in [1, 2^20], got " + std::to_string(window));
  if (random_negatives > 4096 || category_negatives > 4096)
    throw py::value_error("random_negatives and category_negatives must be <= 4096");
  SkipgramSampling s;
  s.window = window;
  s.random_negatives = random_negatives;
  s.typed = typed;
  s.category_negatives = category_negatives;
  s.seed = seed;
  s.epoch = epoch;
  return s;
}

py::array checked_order(const SkipgramCorpus& c, const py::object& order_obj) {
  py::array order = checked(order_obj, "order", false, 1, false);
  check_range(order, "order", 0, static_cast<std::int64_t>(c.n_positions()));
  return order;
}

py::tuple corpus_sgd(const SkipgramCorpus& c, const py::object& input_obj, const py::object& output_obj,
                     const py::object& subwords_obj, const py::object& order_obj, double lr_start, double lr_end,
                     std::uint64_t seed, std::uint64_t epoch, std::size_t window, std::size_t random_negatives,
                     bool typed, std::size_t category_negatives, std::size_t num_threads) {
  py::array input = checked(input_obj, "input", true, 2, true);
  py::array output = checked(output_obj, "output", true, 2, true);
  const auto d = static_cast<std::size_t>(input.shape(1));
  if (static_cast<std::size_t>(input.shape(0)) != c.n_vocab || output.shape(0) != input.shape(0) ||
      output.shape(1) != input.shape(1))
    throw py::value_error("input and output must both have shape (" + std::to_string(c.n_vocab) +
                          ", dim): one row per vocabulary entry of the corpus");
  if (overlaps(input, output)) throw py::value_error("input and output must not share memory");
  float* sub = nullptr;
  std::size_t n_buckets = 0;
  if (!subwords_obj.is_none()) {
    py::array subwords = checked_subwords(subwords_obj, d, input, output);
    n_buckets = static_cast<std::size_t>(subwords.shape(0));
    if (c.max_token_row >= static_cast<std::int64_t>(c.n_rows))
      throw py::value_error("subwords need a title_terms row for every token_rows entry: the corpus has " +
                            std::to_string(c.n_rows) + " title rows, token_rows reaches " +
                            std::to_string(c.max_token_row));
    if (c.max_term >= static_cast<std::int64_t>(n_buckets))
      throw py::value_error("the corpus's title_terms reach bucket " + std::to_string(c.max_term) + ", subwords has " +
                            std::to_string(n_buckets) + " rows");
    sub = static_cast<float*>(subwords.mutable_data());
  }
  py::array order = checked_order(c, order_obj);
  if (!std::isfinite(lr_start) || !std::isfinite(lr_end) || lr_start < 0 || lr_end < 0)
    throw py::value_error("lr_start and lr_end must be finite and >= 0");
  const SkipgramSampling s = sampling(window, random_negatives, typed, category_negatives, seed, epoch);
  SkipgramTables t{static_cast<float*>(input.mutable_data()), static_cast<float*>(output.mutable_data()), sub,
                   c.title_terms.data(), c.n_vocab, d, n_buckets, c.n_rows, c.max_terms};
  // The checked order is copied: another Python thread cannot change it under the pass.
  const std::vector<std::int64_t> centers = copied(order);
  SkipgramPassResult r{};
  {
    py::gil_scoped_release release;
    r = skipgram_corpus_sgd(c, s, t, centers.data(), centers.size(), static_cast<float>(lr_start),
                            static_cast<float>(lr_end), num_threads);
  }
  return py::make_tuple(r.loss, r.pairs);
}

py::array_t<std::int64_t> to_numpy(std::vector<std::int64_t>&& values, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<std::int64_t>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<std::int64_t>*>(p); });
  std::vector<py::ssize_t> strides(shape.size(), sizeof(std::int64_t));
  for (std::size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return py::array_t<std::int64_t>(shape, strides, owned->data(), free_when_done);
}

py::tuple corpus_draws(const SkipgramCorpus& c, const py::object& order_obj, std::uint64_t seed, std::uint64_t epoch,
                       std::size_t window, std::size_t random_negatives, bool typed, std::size_t category_negatives) {
  py::array order = checked_order(c, order_obj);
  const SkipgramSampling s = sampling(window, random_negatives, typed, category_negatives, seed, epoch);
  const std::vector<std::int64_t> centers = copied(order);
  std::vector<std::int64_t> offsets, contexts, negatives;
  {
    py::gil_scoped_release release;
    skipgram_corpus_draws(c, s, centers.data(), centers.size(), offsets, contexts, negatives);
  }
  const auto n_pairs = static_cast<py::ssize_t>(contexts.size());
  const auto kn = static_cast<py::ssize_t>(s.negatives_per_pair(c));
  const auto n_offsets = static_cast<py::ssize_t>(offsets.size());
  return py::make_tuple(to_numpy(std::move(offsets), {n_offsets}),
                        to_numpy(std::move(contexts), {n_pairs}),
                        to_numpy(std::move(negatives), {n_pairs, kn}));
}

}  // namespace

void register_skipgram(py::module_& m) {
  m.def("skipgram_sgd", &skipgram_sgd, py::arg("input"), py::arg("output"), py::arg("subwords"),
        py::arg("title_terms"), py::arg("centers"), py::arg("center_rows"), py::arg("group_offsets"),
        py::arg("targets"), py::arg("negatives"), py::arg("lr_start"), py::arg("lr_end"), py::arg("num_threads") = 0,
        "One SGD pass of skip-gram with negative sampling over pairs grouped by center (hogwild over "
        "num_threads threads, 0 = all cores; GIL released); updates input, output and subwords in place and "
        "returns the summed loss. See csrc/skipgram.h.");
  py::class_<SkipgramCorpus>(m, "SkipgramCorpus",
                             "Session tokens with what the native pass needs to draw its own pairs and negatives "
                             "(copied in, checked). See csrc/skipgram_corpus.h.")
      .def(py::init(&make_corpus), py::arg("tokens"), py::arg("session_offsets"), py::arg("token_rows"),
           py::arg("title_terms"), py::arg("typed"), py::arg("only_viewed"), py::arg("category_start"),
           py::arg("category_size"), py::arg("category_slot"), py::arg("category_members"))
      .def_property_readonly("n_positions", &SkipgramCorpus::n_positions)
      .def_property_readonly("n_vocab", [](const SkipgramCorpus& c) { return c.n_vocab; })
      .def_property_readonly("n_typed", [](const SkipgramCorpus& c) { return c.n_typed; })
      .def("n_pairs", [](const SkipgramCorpus& c, std::size_t window) { return skipgram_corpus_pairs(c, window); },
           py::arg("window"), "Window pairs of one epoch (both directions).")
      .def("epoch_order",
           [](const SkipgramCorpus& c, std::uint64_t seed, std::uint64_t epoch) {
             py::array_t<std::int64_t> order(static_cast<py::ssize_t>(c.n_positions()));
             auto* p = order.mutable_data();
             {
               py::gil_scoped_release release;
               skipgram_epoch_order(p, c.n_positions(), seed, epoch);
             }
             return order;
           },
           py::arg("seed"), py::arg("epoch"), "(n_positions,) int64 permutation of the positions drawn from (seed, epoch).")
      .def("sgd", &corpus_sgd, py::arg("input"), py::arg("output"), py::arg("subwords"), py::arg("order"),
           py::arg("lr_start"), py::arg("lr_end"), py::arg("seed"), py::arg("epoch"), py::arg("window"),
           py::arg("random_negatives"), py::arg("typed"), py::arg("category_negatives"), py::arg("num_threads") = 0,
           "One SGD pass over the centers `order` (positions) with their window pairs and natively drawn negatives "
           "(GIL released, hogwild over num_threads threads, 0 = all cores); returns (summed loss, pairs).")
      .def("draws", &corpus_draws, py::arg("order"), py::arg("seed"), py::arg("epoch"), py::arg("window"),
           py::arg("random_negatives"), py::arg("typed"), py::arg("category_negatives"),
           "The draws `sgd` makes for the same arguments: (group_offsets (G + 1,), contexts (P,) positions, "
           "negatives (P, K)) int64, -1 = none.");
}

}  // namespace upper_fast::bindings
