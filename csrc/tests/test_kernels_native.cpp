// Native tests of the kernels area (no Python): every SIMD table the CPU supports against the
// scalar reference, top-k against brute force, hydration, thresholds. Exit status 0 = pass.
// Built with -DUPPER_FAST_NATIVE_TESTS=ON; run under the sanitizers by scripts/sanitize.sh.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "hydration.h"
#include "simd/dispatch.h"
#include "thresholds.h"
#include "topk.h"

using namespace upper_fast;

namespace {

int failures = 0;

void check(bool ok, const char* what, double got = 0, double want = 0) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s (got %.9g, want %.9g)\n", what, got, want);
  }
}

bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol; }

void test_dots(const simd::Kernels& k, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int> id(-128, 127);
  const simd::Kernels& ref = simd::scalar_kernels();
  for (std::size_t n : {0, 1, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 97, 128, 300, 768}) {
    std::vector<float> a(n), b(n);
    std::vector<std::uint16_t> ab(n), bb(n);
    std::vector<std::int8_t> ai(n), bi(n);
    double mag = 0;
    for (std::size_t i = 0; i < n; ++i) {
      a[i] = nd(rng);
      b[i] = nd(rng);
      ab[i] = simd::float_to_bf16(a[i]);
      bb[i] = simd::float_to_bf16(b[i]);
      ai[i] = static_cast<std::int8_t>(id(rng));
      bi[i] = static_cast<std::int8_t>(id(rng));
      mag += std::fabs(a[i] * b[i]);
    }
    const double tol = 1e-5 * mag + 1e-6;
    check(close(k.dot_f32(a.data(), b.data(), n), ref.dot_f32(a.data(), b.data(), n), tol), "dot_f32");
    check(close(k.dot_f32_bf16(a.data(), bb.data(), n), ref.dot_f32_bf16(a.data(), bb.data(), n), tol), "dot_f32_bf16");
    check(close(k.dot_bf16(ab.data(), bb.data(), n), ref.dot_bf16(ab.data(), bb.data(), n), 4 * tol), "dot_bf16");
    check(k.dot_i8(ai.data(), bi.data(), n) == ref.dot_i8(ai.data(), bi.data(), n), "dot_i8");
    // The hnswlib distances: -dot over the stored layouts (i8: values then an unaligned float scale).
    const std::size_t dim = n;
    check(close(k.dist_f32(a.data(), b.data(), &dim), -ref.dot_f32(a.data(), b.data(), n), tol), "dist_f32");
    check(close(k.dist_bf16(ab.data(), bb.data(), &dim), -ref.dot_bf16(ab.data(), bb.data(), n), 4 * tol), "dist_bf16");
    std::vector<char> sa(n + sizeof(float)), sb(n + sizeof(float));
    const float scale_a = 0.25f, scale_b = 0.5f;
    std::copy(ai.begin(), ai.end(), reinterpret_cast<std::int8_t*>(sa.data()));  // no memcpy: n may be 0
    std::copy(bi.begin(), bi.end(), reinterpret_cast<std::int8_t*>(sb.data()));
    std::memcpy(sa.data() + n, &scale_a, sizeof scale_a);
    std::memcpy(sb.data() + n, &scale_b, sizeof scale_b);
    const float want_i8 = -(scale_a * scale_b * static_cast<float>(ref.dot_i8(ai.data(), bi.data(), n)));
    check(k.dist_i8(sa.data(), sb.data(), &dim) == want_i8, "dist_i8");
    std::vector<float> wide(n);
    k.bf16_to_f32(bb.data(), wide.data(), n);
    for (std::size_t i = 0; i < n; ++i) check(wide[i] == simd::bf16_to_float(bb[i]), "bf16_to_f32");
  }
}

void test_score_panel(const simd::Kernels& k, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  const std::size_t P = k.panel;
  for (std::size_t d : {1, 3, 17, 128}) {
    for (std::size_t nc : {1, 5, 6, 7, 12, 13, 29}) {
      std::vector<float> q(P * d), cand(nc * d), thr(P, 0.f), out(nc * P);
      std::vector<std::uint32_t> mask(nc);
      for (auto& x : q) x = nd(rng);
      for (auto& x : cand) x = nd(rng);
      // The kernels use aligned loads on the packed queries.
      float* qa = static_cast<float*>(std::aligned_alloc(64, ((P * d * 4 + 63) / 64) * 64));
      std::copy(q.begin(), q.end(), qa);
      const bool finite = k.score_panel_f32(qa, cand.data(), nc, d, thr.data(), out.data(), mask.data());
      check(finite, "score_panel finite");
      for (std::size_t c = 0; c < nc; ++c)
        for (std::size_t l = 0; l < P; ++l) {
          double s = 0, mag = 0;
          for (std::size_t j = 0; j < d; ++j) {
            s += static_cast<double>(qa[j * P + l]) * cand[c * d + j];
            mag += std::fabs(qa[j * P + l] * cand[c * d + j]);
          }
          check(close(out[c * P + l], s, 1e-5 * mag + 1e-6), "score_panel value", out[c * P + l], s);
          check(((mask[c] >> l) & 1u) == (out[c * P + l] > 0.f ? 1u : 0u), "score_panel mask");
        }
      cand[nc * d - 1] = std::numeric_limits<float>::quiet_NaN();
      check(!k.score_panel_f32(qa, cand.data(), nc, d, thr.data(), out.data(), mask.data()), "score_panel NaN");
      std::free(qa);
    }
  }
}

void test_topk(std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-2, 2);  // integer data: exact scores and many ties
  const std::size_t m = 21, n = 2003, d = 9, k = 15;
  std::vector<float> q(m * d), c(n * d);
  for (auto& x : q) x = static_cast<float>(small(rng));
  for (auto& x : c) x = static_cast<float>(small(rng));
  std::vector<std::int64_t> indptr(m + 1, 0), indices;
  for (std::size_t i = 0; i < m; ++i) {
    for (std::int64_t j = static_cast<std::int64_t>(i); j < static_cast<std::int64_t>(n); j += 97) indices.push_back(j);
    indptr[i + 1] = static_cast<std::int64_t>(indices.size());
  }
  for (std::size_t threads : {1, 2, 5}) {
    std::vector<std::int64_t> ids(m * k), counts(m);
    std::vector<float> scores(m * k);
    topk_inner_product({q.data(), ElemType::f32, m, d}, {c.data(), ElemType::f32, n, d}, k,
                       {indptr.data(), indices.data()}, threads, ids.data(), scores.data(), counts.data());
    for (std::size_t i = 0; i < m; ++i) {
      std::vector<std::pair<float, std::int64_t>> all;
      for (std::size_t j = 0; j < n; ++j) {
        if ((j % 97) == i % 97 && j >= i) continue;  // excluded
        float s = 0;
        for (std::size_t t = 0; t < d; ++t) s += q[i * d + t] * c[j * d + t];
        all.push_back({-s, static_cast<std::int64_t>(j)});
      }
      std::sort(all.begin(), all.end());
      check(counts[i] == static_cast<std::int64_t>(k), "topk count");
      for (std::size_t r = 0; r < k; ++r) {
        check(ids[i * k + r] == all[r].second, "topk id", static_cast<double>(ids[i * k + r]), static_cast<double>(all[r].second));
        check(scores[i * k + r] == -all[r].first, "topk score");
      }
    }
  }
  bool threw = false;
  std::vector<std::int64_t> bad_ptr(m + 1, 1), bad_idx{static_cast<std::int64_t>(n)};
  bad_ptr[0] = 0;
  std::vector<std::int64_t> ids(m), counts(m);
  std::vector<float> scores(m);
  try {
    topk_inner_product({q.data(), ElemType::f32, m, d}, {c.data(), ElemType::f32, n, d}, 1,
                       {bad_ptr.data(), bad_idx.data()}, 1, ids.data(), scores.data(), counts.data());
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "topk rejects an out-of-range exclusion");
}

void test_hydration_and_thresholds() {
  const float emb[4] = {1, 2, 3, 4}, feat[2] = {5, 6};
  float out[6];
  hydrate_products(emb, feat, 2, 2, 1, 0.5f, out, 1);
  const float want[6] = {1, 2, 2.5f, 3, 4, 3};
  for (int i = 0; i < 6; ++i) check(out[i] == want[i], "hydrate_products");
  HingeThresholds t(0.3f, 0.4f, 0.5f, 0.6f, 0.1f);
  const float s[3] = {0.f, 0.2f, 0.7f};
  const std::int64_t y[3] = {4, 0, 1};
  float grad[3];
  const double loss = t.hinge_loss(s, y, nullptr, 3, grad);
  check(close(loss, (0.6 + 0.1) / 3, 1e-6), "hinge loss", loss, 0.7 / 3);
  check(close(grad[0], -1.0 / 3, 1e-7) && close(grad[1], 1.0 / 3, 1e-7) && grad[2] == 0.f, "hinge grad");
  bool threw = false;
  try {
    HingeThresholds bad(0.1f, 0.4f, 0.5f, 0.6f, 0.2f);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "thresholds validation");
}

}  // namespace

int main() {
  std::mt19937 rng(42);
  for (simd::Level level : {simd::Level::scalar, simd::Level::avx2, simd::Level::avx512}) {
    if (static_cast<int>(level) > static_cast<int>(simd::cpu_max_level())) {
      std::printf("skip %s: not supported by this CPU\n", simd::level_name(level));
      continue;
    }
    const simd::Kernels& k = simd::for_level(level);
    test_dots(k, rng);
    test_score_panel(k, rng);
    std::printf("checked %s\n", k.name);
  }
  test_topk(rng);
  test_hydration_and_thresholds();
  if (failures) std::fprintf(stderr, "%d failure(s)\n", failures);
  else std::printf("all native kernel tests passed\n");
  return failures == 0 ? 0 : 1;
}
