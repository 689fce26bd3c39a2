// fuse_channels (csrc/fusion.h) against hand-computed oracles: the union's slots, RRF, removed rows,
// the learned features, min_tier, NaN ordering, k larger than the candidates, and scratch reuse
// from a larger query to a smaller one. Exits nonzero on failure (run under ASan+UBSan by
// scripts/sanitize.sh).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "fusion.h"
#include "thresholds.h"
#include "tests/check.h"

namespace {

using namespace upper_fast;

struct Out {
  std::vector<std::int64_t> rows;
  std::vector<float> scores, cos;
  std::vector<std::int8_t> tiers;
  std::vector<std::uint8_t> channels;
};

// Catalogue of 6 rows in d = 2: vectors[r] = (r / 10, 0), boost[r] = 0.01 * r.
struct Catalogue {
  std::vector<float> vectors, boost;
  std::vector<std::uint8_t> removed;
  Catalogue() : vectors(12, 0.0f), boost(6), removed(6, 0) {
    for (int r = 0; r < 6; ++r) {
      vectors[static_cast<std::size_t>(2 * r)] = static_cast<float>(r) / 10.0f;
      boost[static_cast<std::size_t>(r)] = 0.01f * static_cast<float>(r);
    }
  }
  FusionCatalogue view() const { return FusionCatalogue{vectors.data(), boost.data(), removed.data(), 2}; }
};

std::size_t run(const std::vector<std::int64_t>& drows, const std::vector<std::int64_t>& lrows,
                const std::vector<float>& bm25, const Catalogue& cat, const FusionParams& p, FusionScratch& scratch,
                Out& out) {
  const HingeThresholds th(0.1f, 0.2f, 0.3f, 0.4f, -0.5f);
  std::vector<float> ds, dc;
  std::vector<std::int8_t> dt;
  for (std::size_t i = 0; i < drows.size(); ++i) {
    ds.push_back(1.0f - 0.1f * static_cast<float>(i));
    dc.push_back(0.9f - 0.1f * static_cast<float>(i));
    dt.push_back(4);
  }
  const std::size_t room = drows.size() + lrows.size();
  out.rows.assign(room, -7);
  out.scores.assign(room, 0.0f);
  out.cos.assign(room, 0.0f);
  out.tiers.assign(room, 0);
  out.channels.assign(room, 0);
  const float q[2] = {1.0f, 0.0f};
  return fuse_channels(DenseHits{drows.data(), ds.data(), dc.data(), dt.data(), drows.size()},
                       LexicalHits{lrows.data(), bm25.data(), lrows.size()}, cat.view(), q, th, p, scratch,
                       out.rows.data(), out.scores.data(), out.cos.data(), out.tiers.data(), out.channels.data());
}

void test_rrf_union() {
  // dense 0, 1, 2; lexical 2, 3: union [0, 1, 2, 3]; 2 found by both.
  Catalogue cat;
  FusionScratch scratch;
  Out o;
  FusionParams p;
  p.k = 10;
  const std::size_t got = run({0, 1, 2}, {2, 3}, {5.0f, 2.5f}, cat, p, scratch, o);
  CHECK(got == 4, "got %zu", got);
  const std::int64_t want_rows[] = {2, 0, 1, 3};  // 1/63 + 1/61 first; 1/62 twice: slot order
  const double want_scores[] = {1.0 / 63 + 1.0 / 61, 1.0 / 61, 1.0 / 62, 1.0 / 62};
  const std::uint8_t want_channels[] = {3, 1, 1, 2};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(o.rows[i] == want_rows[i], "rank %zu: row %lld", i, static_cast<long long>(o.rows[i]));
    CHECK(o.scores[i] == static_cast<float>(want_scores[i]), "rank %zu: score %g", i, o.scores[i]);
    CHECK(o.channels[i] == want_channels[i], "rank %zu: channels %d", i, o.channels[i]);
  }
  // the lexical-only hit: cos = <q, v_3> = 0.3, tier 3 (>= 0.3, < 0.4)
  CHECK(std::fabs(o.cos[3] - 0.3f) < 1e-7f && o.tiers[3] == 3, "cos %g tier %d", o.cos[3], o.tiers[3]);
}

void test_removed_and_min_tier() {
  Catalogue cat;
  cat.removed[3] = 1;  // the first lexical hit is gone: row 4 becomes lexical rank 1
  FusionScratch scratch;
  Out o;
  FusionParams p;
  p.k = 10;
  std::size_t got = run({0}, {3, 4, 1}, {3.0f, 2.0f, 1.0f}, cat, p, scratch, o);
  // rows 0 (dense rank 1) and 4 (lexical rank 1) tie at 1/61: union slot order
  CHECK(got == 3 && o.rows[0] == 0 && o.rows[1] == 4 && o.rows[2] == 1, "got %zu rows %lld %lld %lld", got,
        static_cast<long long>(o.rows[0]), static_cast<long long>(o.rows[1]), static_cast<long long>(o.rows[2]));
  CHECK(o.scores[1] == static_cast<float>(1.0 / 61) && o.scores[2] == static_cast<float>(1.0 / 62), "scores %g %g",
        o.scores[1], o.scores[2]);
  for (std::size_t i = 0; i < got; ++i) CHECK(o.rows[i] != 3, "removed row 3 at rank %zu", i);
  // min_tier 4: cos(v_4) = 0.4 keeps tier 4; cos(v_1) = 0.1 is tier 1 and dropped (dense row 0: tier 4)
  p.min_tier = 4;
  got = run({0}, {3, 4, 1}, {3.0f, 2.0f, 1.0f}, cat, p, scratch, o);
  CHECK(got == 2 && o.rows[0] == 0 && o.rows[1] == 4, "got %zu rows %lld %lld", got,
        static_cast<long long>(o.rows[0]), static_cast<long long>(o.rows[1]));
}

void test_learned_features() {
  Catalogue cat;
  FusionScratch scratch;
  Out o;
  FusionParams p;
  p.method = FusionMethod::learned;
  p.k = 1;
  p.n_words = 1;
  // only bm25_rel (w1) and its one-word copy (w5): the lexical top hit scores 1 + 1, others lower
  p.weights = {0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0};
  std::size_t got = run({0, 1}, {5, 1}, {4.0f, 1.0f}, cat, p, scratch, o);
  CHECK(got == 1 && o.rows[0] == 5 && o.scores[0] == 2.0f, "row %lld score %g", static_cast<long long>(o.rows[0]),
        o.scores[0]);
  // six words: the 6+ copy (w6) counts and the one-word copy does not
  p.n_words = 6;
  p.weights = {0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0};
  p.k = 4;
  got = run({0, 1}, {5, 1}, {4.0f, 1.0f}, cat, p, scratch, o);
  CHECK(got == 3 && o.rows[0] == 5 && o.scores[0] == 1.0f && o.rows[1] == 1 && o.scores[1] == 0.25f,
        "rows %lld %lld scores %g %g", static_cast<long long>(o.rows[0]), static_cast<long long>(o.rows[1]),
        o.scores[0], o.scores[1]);
  // dense score (w0) and tier / 4 (w4): the dense hits' own scores 1.0 and 0.9 plus 1
  p.weights = {1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0};
  got = run({0, 1}, {}, {}, cat, p, scratch, o);
  CHECK(got == 2 && std::fabs(o.scores[0] - 2.0f) < 1e-6f && std::fabs(o.scores[1] - 1.9f) < 1e-6f, "scores %g %g",
        o.scores[0], o.scores[1]);
}

void test_nan_ranks_last_and_scratch_reuse() {
  Catalogue cat;
  cat.vectors[2 * 5] = std::numeric_limits<float>::quiet_NaN();  // row 5's exact score is NaN
  FusionScratch scratch;
  Out o;
  FusionParams p;
  p.method = FusionMethod::learned;
  p.weights = {1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  p.k = 10;
  std::size_t got = run({0, 1, 2, 3}, {5, 4}, {2.0f, 1.0f}, cat, p, scratch, o);
  CHECK(got == 6 && o.rows[5] == 5 && std::isnan(o.scores[5]), "got %zu last row %lld", got,
        static_cast<long long>(o.rows[5]));
  p.min_tier = 1;  // non-finite fused scores are dropped with a tier cut
  got = run({0}, {5}, {2.0f}, cat, p, scratch, o);
  CHECK(got == 1 && o.rows[0] == 0, "got %zu", got);
  p.min_tier = 0;
  got = run({}, {}, {}, cat, p, scratch, o);  // the grown scratch serves an empty query
  CHECK(got == 0, "got %zu", got);
}

}  // namespace

int main() {
  test_rrf_union();
  test_removed_and_min_tier();
  test_learned_features();
  test_nan_ranks_last_and_scratch_reuse();
  if (g_failures) {
    std::fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("test_fusion_native: ok\n");
  return 0;
}
