// Bindings for the kernels area: SIMD dot products, hydration, batched top-k, hinge thresholds.
// Every array is validated under the GIL (type, dtype, shape, C-contiguity: never a silent copy
// or cast), then the work runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#include <string>

#include "bindings/bindings.h"
#include "fusion.h"
#include "hydration.h"
#include "rerank.h"
#include "simd/dispatch.h"
#include "thresholds.h"
#include "topk.h"

namespace py = pybind11;

namespace upper_fast::bindings {
namespace {

enum class Dt { f32, u16, i8, i64 };

const char* dt_name(Dt t) {
  switch (t) {
    case Dt::f32: return "float32";
    case Dt::u16: return "uint16";
    case Dt::i8: return "int8";
    default: return "int64";
  }
}

bool has_dtype(const py::array& a, Dt t) {
  switch (t) {
    case Dt::f32: return a.dtype().is(py::dtype::of<float>());
    case Dt::u16: return a.dtype().is(py::dtype::of<std::uint16_t>());
    case Dt::i8: return a.dtype().is(py::dtype::of<std::int8_t>());
    default: return a.dtype().is(py::dtype::of<std::int64_t>());
  }
}

py::array as_ndarray(const py::handle& obj, const std::string& name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + " must be a numpy.ndarray (got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))) +
                         "): convert with np.asarray(" + name + ", dtype=np.float32)");
  return py::reinterpret_borrow<py::array>(obj);
}

// Checks dtype (one of `allowed`), ndim and C-contiguity; returns the matching dtype.
Dt check_array(const py::array& a, const std::string& name, std::initializer_list<Dt> allowed, int ndim) {
  Dt found = *allowed.begin();
  bool ok = false;
  for (Dt t : allowed)
    if (has_dtype(a, t)) {
      found = t;
      ok = true;
      break;
    }
  if (!ok) {
    std::string want;
    for (Dt t : allowed) want += (want.empty() ? "" : " or ") + std::string(dt_name(t));
    throw py::type_error(name + " must have dtype " + want + " (got " + std::string(py::str(a.dtype())) +
                         "): convert explicitly, e.g. " + name + ".astype(np." + dt_name(*allowed.begin()) + ")");
  }
  if (a.ndim() != ndim)
    throw py::value_error(name + " must be " + std::to_string(ndim) + "-D (got " +
                          std::to_string(a.ndim()) + "-D)");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(name + " must be C-contiguous: call np.ascontiguousarray(" + name + ")");
  return found;
}

std::size_t dim(const py::array& a, int i) { return static_cast<std::size_t>(a.shape(i)); }

// `out` given: a writeable C-contiguous float32 array of exactly (rows, cols); else a new one.
py::array_t<float> output_matrix(const py::object& out, std::size_t rows, std::size_t cols) {
  if (out.is_none()) return py::array_t<float>({rows, cols});
  py::array a = as_ndarray(out, "out");
  check_array(a, "out", {Dt::f32}, 2);
  if (dim(a, 0) != rows || dim(a, 1) != cols)
    throw py::value_error("out must have shape (" + std::to_string(rows) + ", " + std::to_string(cols) +
                          ") (got (" + std::to_string(a.shape(0)) + ", " + std::to_string(a.shape(1)) + "))");
  if (!a.writeable()) throw py::value_error("out must be writeable");
  return py::reinterpret_borrow<py::array_t<float>>(a);
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

void check_finite(const float* p, std::size_t n, const std::string& name) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i]))
      throw py::value_error(name + " contains NaN or inf (first at flat index " + std::to_string(i) + ")");
}

const simd::Kernels& table_for(const py::object& level) {
  if (level.is_none()) return simd::active();
  const std::string s = py::str(level);
  if (s == "scalar") return simd::for_level(simd::Level::scalar);
  if (s == "avx2") return simd::for_level(simd::Level::avx2);
  if (s == "avx512") return simd::for_level(simd::Level::avx512);
  throw py::value_error("level must be 'avx512', 'avx2', 'scalar' or None (got '" + s + "')");
}

py::object simd_dot(const py::object& a_obj, const py::object& b_obj, const py::object& level) {
  py::array a = as_ndarray(a_obj, "a"), b = as_ndarray(b_obj, "b");
  const Dt ta = check_array(a, "a", {Dt::f32, Dt::u16, Dt::i8}, 1);
  const Dt tb = check_array(b, "b", {Dt::f32, Dt::u16, Dt::i8}, 1);
  if (a.shape(0) != b.shape(0))
    throw py::value_error("a and b differ in length (" + std::to_string(a.shape(0)) + " vs " +
                          std::to_string(b.shape(0)) + ")");
  const simd::Kernels& k = table_for(level);
  const std::size_t n = dim(a, 0);
  if (ta == Dt::f32 && tb == Dt::f32)
    return py::float_(k.dot_f32(static_cast<const float*>(a.data()), static_cast<const float*>(b.data()), n));
  if (ta == Dt::f32 && tb == Dt::u16)
    return py::float_(k.dot_f32_bf16(static_cast<const float*>(a.data()), static_cast<const std::uint16_t*>(b.data()), n));
  if (ta == Dt::u16 && tb == Dt::u16)
    return py::float_(k.dot_bf16(static_cast<const std::uint16_t*>(a.data()), static_cast<const std::uint16_t*>(b.data()), n));
  if (ta == Dt::i8 && tb == Dt::i8) {
    if (n >= (std::size_t{1} << 17))
      throw py::value_error("int8 dot products are exact only below 131072 elements");
    return py::int_(k.dot_i8(static_cast<const std::int8_t*>(a.data()), static_cast<const std::int8_t*>(b.data()), n));
  }
  throw py::type_error(std::string("unsupported dtype pair (") + dt_name(ta) + ", " + dt_name(tb) +
                       "): use (float32, float32), (float32, uint16 bf16), (uint16, uint16) or (int8, int8)");
}

// y + a * x as a new float32 array (the SIMD axpy kernel at `level`; for kernel tests).
py::array_t<float> simd_axpy(double a, const py::object& x_obj, const py::object& y_obj, const py::object& level) {
  py::array x = as_ndarray(x_obj, "x"), y = as_ndarray(y_obj, "y");
  check_array(x, "x", {Dt::f32}, 1);
  check_array(y, "y", {Dt::f32}, 1);
  if (x.shape(0) != y.shape(0))
    throw py::value_error("x and y differ in length (" + std::to_string(x.shape(0)) + " vs " +
                          std::to_string(y.shape(0)) + ")");
  const simd::Kernels& k = table_for(level);
  const std::size_t n = dim(x, 0);
  py::array_t<float> out(static_cast<py::ssize_t>(n));
  std::copy_n(static_cast<const float*>(y.data()), n, out.mutable_data());
  k.axpy_f32(static_cast<float>(a), static_cast<const float*>(x.data()), out.mutable_data(), n);
  return out;
}

py::array_t<float> hydrate_products(const py::object& emb_obj, const py::object& feat_obj, double scale,
                                    const py::object& out_obj, std::size_t num_threads) {
  py::array emb = as_ndarray(emb_obj, "emb"), feat = as_ndarray(feat_obj, "features");
  check_array(emb, "emb", {Dt::f32}, 2);
  check_array(feat, "features", {Dt::f32}, 2);
  if (emb.shape(0) != feat.shape(0))
    throw py::value_error("emb and features differ in rows (" + std::to_string(emb.shape(0)) + " vs " +
                          std::to_string(feat.shape(0)) + ")");
  if (!std::isfinite(scale)) throw py::value_error("scale must be finite");
  const std::size_t n = dim(emb, 0), d = dim(emb, 1), f = dim(feat, 1);
  py::array_t<float> out = output_matrix(out_obj, n, d + f);
  if (overlaps(out, emb) || overlaps(out, feat)) throw py::value_error("out must not share memory with emb or features");
  const float* e = static_cast<const float*>(emb.data());
  const float* x = static_cast<const float*>(feat.data());
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    upper_fast::hydrate_products(e, x, n, d, f, static_cast<float>(scale), o, num_threads);
  }
  return out;
}

py::array_t<float> hydrate_queries(const py::object& q_obj, const py::object& w_obj,
                                   const py::object& out_obj, std::size_t num_threads) {
  py::array q = as_ndarray(q_obj, "q"), w = as_ndarray(w_obj, "weights");
  check_array(q, "q", {Dt::f32}, 2);
  check_array(w, "weights", {Dt::f32}, 1);
  const std::size_t m = dim(q, 0), d = dim(q, 1), f = dim(w, 0);
  check_finite(static_cast<const float*>(w.data()), f, "weights");
  py::array_t<float> out = output_matrix(out_obj, m, d + f);
  if (overlaps(out, q) || overlaps(out, w)) throw py::value_error("out must not share memory with q or weights");
  const float* qp = static_cast<const float*>(q.data());
  const float* wp = static_cast<const float*>(w.data());
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    upper_fast::hydrate_queries(qp, wp, m, d, f, o, num_threads);
  }
  return out;
}

// (rows (m, k) int64 -1 padded, scores (m, k) float32 -inf padded, counts (m,)): per query row i,
// the candidates[i] re-scored exactly as <q_i, vectors[row]> + bias[row], best k kept.
py::tuple rerank_exact(const py::object& q_obj, const py::object& v_obj, const py::object& b_obj,
                       const py::object& c_obj, long long k) {
  py::array q = as_ndarray(q_obj, "queries"), v = as_ndarray(v_obj, "vectors");
  py::array b = as_ndarray(b_obj, "bias"), c = as_ndarray(c_obj, "candidates");
  check_array(q, "queries", {Dt::f32}, 2);
  check_array(v, "vectors", {Dt::f32}, 2);
  check_array(b, "bias", {Dt::f32}, 1);
  check_array(c, "candidates", {Dt::i64}, 2);
  if (k <= 0) throw py::value_error("k must be a positive integer (got " + std::to_string(k) + ")");
  const std::size_t m = dim(q, 0), d = dim(q, 1), n = dim(v, 0), mc = dim(c, 1);
  if (dim(v, 1) != d)
    throw py::value_error("queries have dimension " + std::to_string(d) + " but vectors have " + std::to_string(v.shape(1)));
  if (dim(b, 0) != n)
    throw py::value_error("bias has " + std::to_string(b.shape(0)) + " entries for " + std::to_string(n) + " vectors");
  if (dim(c, 0) != m)
    throw py::value_error("candidates has " + std::to_string(c.shape(0)) + " rows for " + std::to_string(m) + " queries");
  check_finite(static_cast<const float*>(q.data()), m * d, "queries");
  const std::int64_t* cp = static_cast<const std::int64_t*>(c.data());
  for (std::size_t i = 0; i < m * mc; ++i)
    if (cp[i] >= static_cast<std::int64_t>(n))
      throw py::value_error("candidates[" + std::to_string(i / mc) + ", " + std::to_string(i % mc) + "] = " +
                            std::to_string(cp[i]) + " is out of range for " + std::to_string(n) +
                            " vectors (negative entries are padding)");
  const std::size_t kk = std::min(static_cast<std::size_t>(k), mc);  // never more than the candidates
  py::array_t<std::int64_t> rows({m, kk});
  py::array_t<float> scores({m, kk});
  py::array_t<std::int64_t> counts(static_cast<py::ssize_t>(m));
  const float* qp = static_cast<const float*>(q.data());
  const float* vp = static_cast<const float*>(v.data());
  const float* bp = static_cast<const float*>(b.data());
  std::int64_t* rp = rows.mutable_data();
  float* sp = scores.mutable_data();
  std::int64_t* np_ = counts.mutable_data();
  {
    py::gil_scoped_release release;
    thread_local std::vector<RerankHit> scratch;  // per serving thread, grown once
    if (scratch.size() < mc + 1) scratch.resize(mc + 1);
    for (std::size_t i = 0; i < m; ++i) {
      const std::size_t got = upper_fast::rerank_exact(qp + i * d, vp, bp, d, cp + i * mc, mc, kk, scratch.data(),
                                                       rp + i * kk, sp + i * kk);
      for (std::size_t j = got; j < kk; ++j) {
        rp[i * kk + j] = -1;
        sp[i * kk + j] = -std::numeric_limits<float>::infinity();
      }
      np_[i] = static_cast<std::int64_t>(got);
    }
  }
  return py::make_tuple(rows, scores, counts);
}

py::tuple topk_inner_product(const py::object& q_obj, const py::object& c_obj, long long k,
                             const py::object& indptr_obj, const py::object& indices_obj,
                             long long num_threads) {
  py::array q = as_ndarray(q_obj, "queries"), c = as_ndarray(c_obj, "candidates");
  const Dt tq = check_array(q, "queries", {Dt::f32, Dt::u16}, 2);
  const Dt tc = check_array(c, "candidates", {Dt::f32, Dt::u16}, 2);
  if (k <= 0) throw py::value_error("k must be a positive integer (got " + std::to_string(k) + ")");
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0 = all cores)");
  const std::size_t m = dim(q, 0), n = dim(c, 0), d = dim(q, 1);
  if (dim(c, 1) != d)
    throw py::value_error("queries have dimension " + std::to_string(d) + " but candidates have " +
                          std::to_string(c.shape(1)));
  if (d == 0) throw py::value_error("dimension must be positive");

  Exclusions ex;
  py::array indptr, indices;
  if (indptr_obj.is_none() != indices_obj.is_none())
    throw py::value_error("exclude_indptr and exclude_indices must be given together");
  if (!indptr_obj.is_none()) {
    indptr = as_ndarray(indptr_obj, "exclude_indptr");
    indices = as_ndarray(indices_obj, "exclude_indices");
    check_array(indptr, "exclude_indptr", {Dt::i64}, 1);
    check_array(indices, "exclude_indices", {Dt::i64}, 1);
    if (dim(indptr, 0) != m + 1)
      throw py::value_error("exclude_indptr must have m + 1 = " + std::to_string(m + 1) + " entries (got " +
                            std::to_string(indptr.shape(0)) + ")");
    const auto* ip = static_cast<const std::int64_t*>(indptr.data());
    if (ip[0] != 0) throw py::value_error("exclude_indptr[0] must be 0");
    for (std::size_t i = 0; i < m; ++i)
      if (ip[i + 1] < ip[i]) throw py::value_error("exclude_indptr must be non-decreasing");
    if (static_cast<std::size_t>(ip[m]) != dim(indices, 0))
      throw py::value_error("exclude_indptr[-1] must equal len(exclude_indices) (" +
                            std::to_string(indices.shape(0)) + ")");
    ex.indptr = ip;
    ex.indices = static_cast<const std::int64_t*>(indices.data());
  }

  const std::size_t kk = static_cast<std::size_t>(k);
  py::array_t<std::int64_t> ids({m, kk});
  py::array_t<float> scores({m, kk});
  py::array_t<std::int64_t> counts(static_cast<py::ssize_t>(m));
  MatrixView qv{q.data(), tq == Dt::f32 ? ElemType::f32 : ElemType::bf16, m, d};
  MatrixView cv{c.data(), tc == Dt::f32 ? ElemType::f32 : ElemType::bf16, n, d};
  std::int64_t* ip = ids.mutable_data();
  float* sp = scores.mutable_data();
  std::int64_t* cp = counts.mutable_data();
  {
    py::gil_scoped_release release;
    upper_fast::topk_inner_product(qv, cv, kk, ex, static_cast<std::size_t>(num_threads), ip, sp, cp);
  }
  return py::make_tuple(ids, scores, counts);
}

// Scores: any shape, float32, C-contiguous, no NaN.
py::array scores_arg(const py::object& obj) {
  py::array s = as_ndarray(obj, "scores");
  check_array(s, "scores", {Dt::f32}, static_cast<int>(s.ndim()));
  const auto* p = static_cast<const float*>(s.data());
  for (py::ssize_t i = 0; i < s.size(); ++i)
    if (std::isnan(p[i])) throw py::value_error("scores contain NaN (first at flat index " + std::to_string(i) + ")");
  return s;
}

py::array labels_arg(const py::object& obj, const py::array& scores) {
  py::array l = as_ndarray(obj, "labels");
  check_array(l, "labels", {Dt::i64}, 1);
  if (scores.ndim() != 1 || scores.shape(0) != l.shape(0))
    throw py::value_error("scores and labels must be 1-D of the same length (got scores " +
                          std::to_string(scores.ndim()) + "-D of size " + std::to_string(scores.size()) +
                          ", labels " + std::to_string(l.shape(0)) + ")");
  return l;
}

std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

void register_thresholds(py::module_& m) {
  py::class_<HingeThresholds>(m, "HingeThresholds")
      .def(py::init<float, float, float, float, float>(), py::arg("click"), py::arg("favorite"),
           py::arg("add_to_cart"), py::arg("purchase"), py::arg("negative"))
      .def("threshold", [](const HingeThresholds& t, int code) {
        if (code < 0 || code > kNumTypes) throw py::value_error("code must be 0..4");
        return t.threshold(code);
      })
      .def("prune", [](const HingeThresholds& t, const py::object& s_obj, int min_tier) {
        if (min_tier < 0 || min_tier > kNumTypes)
          throw py::value_error("min_tier must be 0 (negative cut) .. 4 (purchase)");
        py::array s = scores_arg(s_obj);
        py::array_t<bool> keep(shape_of(s));
        const auto* sp = static_cast<const float*>(s.data());
        auto* kp = reinterpret_cast<std::uint8_t*>(keep.mutable_data());
        const std::size_t n = static_cast<std::size_t>(s.size());
        {
          py::gil_scoped_release release;
          t.prune(sp, n, min_tier, kp);
        }
        return keep;
      }, py::arg("scores"), py::arg("min_tier"))
      .def("tier", [](const HingeThresholds& t, const py::object& s_obj) {
        py::array s = scores_arg(s_obj);
        py::array_t<std::int8_t> tiers(shape_of(s));
        const auto* sp = static_cast<const float*>(s.data());
        std::int8_t* tp = tiers.mutable_data();
        const std::size_t n = static_cast<std::size_t>(s.size());
        {
          py::gil_scoped_release release;
          t.tier(sp, n, tp);
        }
        return tiers;
      }, py::arg("scores"))
      .def("finish_hits", [](const HingeThresholds& t, const py::object& ids_obj, const py::object& s_obj,
                             const py::object& b_obj, long long k, int min_tier, bool prune) {
        // (ids int64, scores f32, cosines f32, tiers int8), each of the kept length.
        if (min_tier < 0 || min_tier > kNumTypes)
          throw py::value_error("min_tier must be 0 (negative cut) .. 4 (purchase)");
        if (k < 0) throw py::value_error("k must be >= 0 (got " + std::to_string(k) + ")");
        py::array ids = as_ndarray(ids_obj, "ids"), s = as_ndarray(s_obj, "scores"), b = as_ndarray(b_obj, "boost");
        check_array(ids, "ids", {Dt::i64}, 1);
        check_array(s, "scores", {Dt::f32}, 1);
        check_array(b, "boost", {Dt::f32}, 1);
        const std::size_t m = dim(ids, 0), n = dim(b, 0);
        if (dim(s, 0) != m)
          throw py::value_error("ids and scores must have the same length (got " + std::to_string(m) + " and " +
                                std::to_string(s.shape(0)) + ")");
        const auto* ip = static_cast<const std::int64_t*>(ids.data());
        for (std::size_t i = 0; i < m; ++i)
          if (ip[i] >= static_cast<std::int64_t>(n))
            throw py::value_error("ids[" + std::to_string(i) + "] = " + std::to_string(ip[i]) + " is out of range for " +
                                  std::to_string(n) + " boost entries (negative ids are padding)");
        const std::size_t kk = std::min(static_cast<std::size_t>(k), m);
        thread_local std::vector<std::int64_t> oi;
        thread_local std::vector<float> os, oc;
        thread_local std::vector<std::int8_t> ot;
        if (oi.size() < kk) { oi.resize(kk); os.resize(kk); oc.resize(kk); ot.resize(kk); }
        std::size_t got = 0;
        {
          py::gil_scoped_release release;
          got = t.finish_hits(ip, static_cast<const float*>(s.data()), m, static_cast<const float*>(b.data()), kk,
                              min_tier, prune, oi.data(), os.data(), oc.data(), ot.data());
        }
        const auto len = static_cast<py::ssize_t>(got);
        py::array_t<std::int64_t> r_ids(len);
        py::array_t<float> r_s(len), r_c(len);
        py::array_t<std::int8_t> r_t(len);
        std::copy_n(oi.data(), got, r_ids.mutable_data());
        std::copy_n(os.data(), got, r_s.mutable_data());
        std::copy_n(oc.data(), got, r_c.mutable_data());
        std::copy_n(ot.data(), got, r_t.mutable_data());
        return py::make_tuple(r_ids, r_s, r_c, r_t);
      }, py::arg("ids"), py::arg("scores"), py::arg("boost"), py::arg("k"), py::arg("min_tier"), py::arg("prune"))
      .def("hinge_loss", [](const HingeThresholds& t, const py::object& s_obj, const py::object& l_obj,
                            const py::object& w_obj) {
        py::array s = scores_arg(s_obj);
        py::array l = labels_arg(l_obj, s);
        const float* wp = nullptr;
        py::array w;
        if (!w_obj.is_none()) {
          w = as_ndarray(w_obj, "weights");
          check_array(w, "weights", {Dt::f32}, 1);
          if (w.shape(0) != s.shape(0)) throw py::value_error("weights must have one entry per score");
          wp = static_cast<const float*>(w.data());
        }
        const std::size_t n = static_cast<std::size_t>(s.size());
        py::array_t<float> grad(static_cast<py::ssize_t>(n));
        const auto* sp = static_cast<const float*>(s.data());
        const auto* lp = static_cast<const std::int64_t*>(l.data());
        float* gp = grad.mutable_data();
        double loss;
        {
          py::gil_scoped_release release;
          loss = t.hinge_loss(sp, lp, wp, n, gp);
        }
        return py::make_tuple(loss, grad);
      }, py::arg("scores"), py::arg("labels"), py::arg("weights") = py::none())
      .def("calibrate", [](const HingeThresholds& t, const py::object& s_obj, const py::object& l_obj) {
        py::array s = scores_arg(s_obj);
        py::array l = labels_arg(l_obj, s);
        std::array<std::int64_t, 5> kept, positives;
        std::array<std::array<std::int64_t, 5>, 5> hits;
        const auto* sp = static_cast<const float*>(s.data());
        const auto* lp = static_cast<const std::int64_t*>(l.data());
        const std::size_t n = static_cast<std::size_t>(s.size());
        {
          py::gil_scoped_release release;
          t.calibrate(sp, lp, n, kept, hits, positives);
        }
        return py::make_tuple(kept, hits, positives);
      }, py::arg("scores"), py::arg("labels"));
}

// One hybrid query's union and fusion (csrc/fusion.h). Returns (rows int64, scores f32, cosines f32,
// tiers int8, channels uint8), each of the kept length.
py::tuple fuse_hybrid(const py::object& dr_obj, const py::object& ds_obj, const py::object& dc_obj,
                      const py::object& dt_obj, const py::object& lr_obj, const py::object& bm_obj,
                      const py::object& q_obj, const py::object& v_obj, const py::object& b_obj,
                      const py::object& rm_obj, const HingeThresholds& thresholds, const std::string& method,
                      const py::object& weights, long long rrf_k, long long n_words, long long k, int min_tier) {
  py::array dr = as_ndarray(dr_obj, "dense_rows"), ds = as_ndarray(ds_obj, "dense_scores");
  py::array dc = as_ndarray(dc_obj, "dense_cosines"), dt = as_ndarray(dt_obj, "dense_tiers");
  py::array lr = as_ndarray(lr_obj, "lexical_rows"), bm = as_ndarray(bm_obj, "bm25");
  py::array q = as_ndarray(q_obj, "query"), v = as_ndarray(v_obj, "vectors");
  py::array b = as_ndarray(b_obj, "boost"), rm = as_ndarray(rm_obj, "removed");
  check_array(dr, "dense_rows", {Dt::i64}, 1);
  check_array(ds, "dense_scores", {Dt::f32}, 1);
  check_array(dc, "dense_cosines", {Dt::f32}, 1);
  check_array(dt, "dense_tiers", {Dt::i8}, 1);
  check_array(lr, "lexical_rows", {Dt::i64}, 1);
  check_array(bm, "bm25", {Dt::f32}, 1);
  check_array(q, "query", {Dt::f32}, 1);
  check_array(v, "vectors", {Dt::f32}, 2);
  check_array(b, "boost", {Dt::f32}, 1);
  if (!rm.dtype().is(py::dtype::of<bool>()) || rm.ndim() != 1 || !(rm.flags() & py::array::c_style))
    throw py::type_error("removed must be a C-contiguous 1-D bool array (got dtype " + std::string(py::str(rm.dtype())) + ")");
  // n catalogue rows (boost, removed); the vectors may hold fewer (a live catalogue's upserted rows
  // past them are never lexical hits, whose index predates them).
  const std::size_t nd = dim(dr, 0), nl = dim(lr, 0), n = dim(b, 0), nv = dim(v, 0), d = dim(v, 1);
  if (dim(ds, 0) != nd || dim(dc, 0) != nd || dim(dt, 0) != nd)
    throw py::value_error("dense_rows, dense_scores, dense_cosines and dense_tiers must have the same length");
  if (dim(bm, 0) != nl) throw py::value_error("lexical_rows and bm25 must have the same length");
  if (dim(q, 0) != d)
    throw py::value_error("query has dimension " + std::to_string(q.shape(0)) + " but vectors have " + std::to_string(d));
  if (dim(rm, 0) != n)
    throw py::value_error("boost and removed must have the same length (got " + std::to_string(n) + " and " +
                          std::to_string(rm.shape(0)) + ")");
  if (method != "rrf" && method != "learned")
    throw py::value_error("method must be 'rrf' or 'learned' (got '" + method + "')");
  if (rrf_k < 0) throw py::value_error("rrf_k must be >= 0 (got " + std::to_string(rrf_k) + ")");
  if (k < 0 || n_words < 0) throw py::value_error("k and n_words must be >= 0");
  if (min_tier < 0 || min_tier > kNumTypes) throw py::value_error("min_tier must be 0 (negative cut) .. 4 (purchase)");
  FusionParams params;
  params.method = method == "rrf" ? FusionMethod::rrf : FusionMethod::learned;
  params.rrf_k = rrf_k;
  params.n_words = static_cast<std::size_t>(n_words);
  params.min_tier = min_tier;
  params.k = static_cast<std::size_t>(k);
  if (params.method == FusionMethod::learned) {
    const auto w = weights.cast<std::vector<double>>();
    if (w.size() != kFusionFeatures)
      throw py::value_error("a learned fusion needs " + std::to_string(kFusionFeatures) + " weights (got " +
                            std::to_string(w.size()) + ")");
    std::copy(w.begin(), w.end(), params.weights.begin());
  }
  const auto* drp = static_cast<const std::int64_t*>(dr.data());
  const auto* lrp = static_cast<const std::int64_t*>(lr.data());
  for (std::size_t i = 0; i < nd; ++i)
    if (drp[i] < 0 || drp[i] >= static_cast<std::int64_t>(n))
      throw py::value_error("dense_rows[" + std::to_string(i) + "] = " + std::to_string(drp[i]) +
                            " is out of range for " + std::to_string(n) + " boost entries");
  const auto nl_max = static_cast<std::int64_t>(std::min(n, nv));
  for (std::size_t i = 0; i < nl; ++i)
    if (lrp[i] < 0 || lrp[i] >= nl_max)
      throw py::value_error("lexical_rows[" + std::to_string(i) + "] = " + std::to_string(lrp[i]) +
                            " is out of range for " + std::to_string(nv) + " vectors and " + std::to_string(n) +
                            " boost entries");
  const DenseHits dense{drp, static_cast<const float*>(ds.data()), static_cast<const float*>(dc.data()),
                        static_cast<const std::int8_t*>(dt.data()), nd};
  const LexicalHits lexical{lrp, static_cast<const float*>(bm.data()), nl};
  const FusionCatalogue catalogue{static_cast<const float*>(v.data()), static_cast<const float*>(b.data()),
                                  static_cast<const std::uint8_t*>(rm.data()), d};
  thread_local FusionScratch scratch;  // per serving thread, grown once
  thread_local std::vector<std::int64_t> o_rows;
  thread_local std::vector<float> o_scores, o_cos;
  thread_local std::vector<std::int8_t> o_tiers;
  thread_local std::vector<std::uint8_t> o_channels;
  const std::size_t room = nd + nl;
  if (o_rows.size() < room) {
    o_rows.resize(room); o_scores.resize(room); o_cos.resize(room); o_tiers.resize(room); o_channels.resize(room);
  }
  std::size_t got = 0;
  {
    py::gil_scoped_release release;
    got = fuse_channels(dense, lexical, catalogue, static_cast<const float*>(q.data()), thresholds, params, scratch,
                        o_rows.data(), o_scores.data(), o_cos.data(), o_tiers.data(), o_channels.data());
  }
  const auto len = static_cast<py::ssize_t>(got);
  py::array_t<std::int64_t> r_rows(len);
  py::array_t<float> r_scores(len), r_cos(len);
  py::array_t<std::int8_t> r_tiers(len);
  py::array_t<std::uint8_t> r_channels(len);
  std::copy_n(o_rows.data(), got, r_rows.mutable_data());
  std::copy_n(o_scores.data(), got, r_scores.mutable_data());
  std::copy_n(o_cos.data(), got, r_cos.mutable_data());
  std::copy_n(o_tiers.data(), got, r_tiers.mutable_data());
  std::copy_n(o_channels.data(), got, r_channels.mutable_data());
  return py::make_tuple(r_rows, r_scores, r_cos, r_tiers, r_channels);
}

}  // namespace

void register_kernels(py::module_& m) {
  m.def("simd_dot", &simd_dot, py::arg("a"), py::arg("b"), py::arg("level") = py::none(),
        "Inner product of two 1-D arrays with the SIMD kernel for their dtypes (float32, uint16 = bf16, "
        "int8) at `level` (None = the active level).");
  m.def("simd_axpy", &simd_axpy, py::arg("a"), py::arg("x"), py::arg("y"), py::arg("level") = py::none(),
        "y + a * x for two float32 1-D arrays with the SIMD axpy kernel at `level` (None = the active level).");
  m.def("hydrate_products", &hydrate_products, py::arg("emb"), py::arg("features"), py::arg("scale") = 1.0,
        py::arg("out") = py::none(), py::arg("num_threads") = 0);
  m.def("hydrate_queries", &hydrate_queries, py::arg("q"), py::arg("weights"), py::arg("out") = py::none(),
        py::arg("num_threads") = 0);
  m.def("rerank_exact", &rerank_exact, py::arg("queries"), py::arg("vectors"), py::arg("bias"), py::arg("candidates"),
        py::arg("k"));
  m.def("topk_inner_product", &topk_inner_product, py::arg("queries"), py::arg("candidates"), py::arg("k"),
        py::arg("exclude_indptr") = py::none(), py::arg("exclude_indices") = py::none(),
        py::arg("num_threads") = 0);
  m.def("fuse_hybrid", &fuse_hybrid, py::arg("dense_rows"), py::arg("dense_scores"), py::arg("dense_cosines"),
        py::arg("dense_tiers"), py::arg("lexical_rows"), py::arg("bm25"), py::arg("query"), py::arg("vectors"),
        py::arg("boost"), py::arg("removed"), py::arg("thresholds"), py::arg("method"), py::arg("weights"),
        py::arg("rrf_k"), py::arg("n_words"), py::arg("k"), py::arg("min_tier"),
        "One hybrid query's union of the dense and lexical hits and their fusion ('rrf' or 'learned' over "
        "upper_fast.lexical.FUSION_FEATURES), the best k: (rows int64, scores f32, cosines f32, tiers int8, "
        "channels uint8: 1 = dense, 2 = lexical), each of the kept length.");
  register_thresholds(m);
}

}  // namespace upper_fast::bindings
