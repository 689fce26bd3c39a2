#include "fusion.h"

#include <algorithm>
#include <cmath>

#include "simd/dispatch.h"

namespace upper_fast {
namespace {

inline void prefetch_row(const float* row, std::size_t d) {
  const char* p = reinterpret_cast<const char*>(row);
  for (std::size_t off = 0; off < d * sizeof(float); off += 64) __builtin_prefetch(p + off, 0, 1);
}

inline double reciprocal_rank(std::int64_t rrf_k, std::int32_t rank) {
  return rank > 0 ? 1.0 / static_cast<double>(rrf_k + rank) : 0.0;
}

}  // namespace

std::size_t fuse_channels(const DenseHits& dense, const LexicalHits& lexical, const FusionCatalogue& catalogue,
                          const float* q, const HingeThresholds& thresholds, const FusionParams& params,
                          FusionScratch& scratch, std::int64_t* out_rows, float* out_scores, float* out_cosines,
                          std::int8_t* out_tiers, std::uint8_t* out_channels) {
  const std::size_t nd = dense.n;
  auto& cand = scratch.candidates;
  auto& by_row = scratch.dense_by_row;
  if (cand.size() < nd + lexical.n) cand.resize(nd + lexical.n);
  if (by_row.size() < nd) by_row.resize(nd);

  for (std::size_t i = 0; i < nd; ++i) {
    cand[i] = FusionCandidate{dense.rows[i], dense.scores[i], dense.cosines[i], 0.0f,
                              static_cast<std::int32_t>(i + 1), 0, dense.tiers[i], 0.0};
    by_row[i] = {dense.rows[i], static_cast<std::int32_t>(i)};
  }
  std::sort(by_row.begin(), by_row.begin() + static_cast<std::ptrdiff_t>(nd));

  // Lexical hits: the dense slot where the dense channel found the row, else a new slot after the
  // dense hits. Lexical-only rows are prefetched here and scored in a second pass.
  std::size_t m = nd;
  std::int32_t lexical_rank = 0;
  for (std::size_t j = 0; j < lexical.n; ++j) {
    const std::int64_t row = lexical.rows[j];
    if (catalogue.removed[row]) continue;  // removed products leave every channel
    ++lexical_rank;
    auto it = std::lower_bound(by_row.begin(), by_row.begin() + static_cast<std::ptrdiff_t>(nd),
                               std::pair<std::int64_t, std::int32_t>{row, 0});
    if (it != by_row.begin() + static_cast<std::ptrdiff_t>(nd) && it->first == row) {
      FusionCandidate& c = cand[static_cast<std::size_t>(it->second)];
      c.lexical_rank = lexical_rank;
      c.bm25 = lexical.bm25[j];
      continue;
    }
    prefetch_row(catalogue.vectors + static_cast<std::size_t>(row) * catalogue.d, catalogue.d);
    cand[m++] = FusionCandidate{row, 0.0f, 0.0f, lexical.bm25[j], 0, lexical_rank, 0, 0.0};
  }
  const simd::Kernels& kern = simd::active();
  for (std::size_t i = nd; i < m; ++i) {
    FusionCandidate& c = cand[i];
    const auto row = static_cast<std::size_t>(c.row);
    c.cosine = kern.dot_f32(q, catalogue.vectors + row * catalogue.d, catalogue.d);
    c.dense_score = c.cosine + catalogue.boost[row];
    thresholds.tier(&c.cosine, 1, &c.tier);
  }

  if (params.method == FusionMethod::rrf) {
    for (std::size_t i = 0; i < m; ++i)
      cand[i].fused = reciprocal_rank(params.rrf_k, cand[i].dense_rank) +
                      reciprocal_rank(params.rrf_k, cand[i].lexical_rank);
  } else {
    float best = 0.0f;
    for (std::size_t i = 0; i < m; ++i) best = std::max(best, cand[i].bm25);
    const auto& w = params.weights;
    for (std::size_t i = 0; i < m; ++i) {
      const FusionCandidate& c = cand[i];
      const double rel = best > 0.0f ? static_cast<double>(c.bm25 / best) : 0.0;
      double s = static_cast<double>(c.dense_score) * w[0];
      s += rel * w[1];
      s += reciprocal_rank(params.rrf_k, c.dense_rank) * w[2];
      s += reciprocal_rank(params.rrf_k, c.lexical_rank) * w[3];
      s += (static_cast<double>(c.tier) / 4.0) * w[4];
      s += (params.n_words == 1 ? rel : 0.0) * w[5];
      s += (params.n_words >= 6 ? rel : 0.0) * w[6];
      cand[i].fused = s;
    }
  }

  auto& order = scratch.order;
  if (order.size() < m) order.resize(m);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < m; ++i) {
    if (params.min_tier > 0 && (cand[i].tier < params.min_tier || !std::isfinite(cand[i].fused))) continue;
    order[kept++] = static_cast<std::int32_t>(i);
  }
  // Fused score descending, NaN last, ties by union slot (what a stable argsort of -fused gives).
  auto better = [&cand](std::int32_t a, std::int32_t b) {
    const double fa = cand[static_cast<std::size_t>(a)].fused, fb = cand[static_cast<std::size_t>(b)].fused;
    const bool na = std::isnan(fa), nb = std::isnan(fb);
    if (na != nb) return nb;
    if (!na && fa != fb) return fa > fb;
    return a < b;
  };
  const std::size_t keep = std::min(params.k, kept);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep),
                    order.begin() + static_cast<std::ptrdiff_t>(kept), better);
  for (std::size_t i = 0; i < keep; ++i) {
    const FusionCandidate& c = cand[static_cast<std::size_t>(order[i])];
    out_rows[i] = c.row;
    out_scores[i] = static_cast<float>(c.fused);
    out_cosines[i] = c.cosine;
    out_tiers[i] = c.tier;
    out_channels[i] = static_cast<std::uint8_t>((c.dense_rank > 0 ? 1 : 0) | (c.lexical_rank > 0 ? 2 : 0));
  }
  return keep;
}

}  // namespace upper_fast
