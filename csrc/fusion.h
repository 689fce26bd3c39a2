// Hybrid retrieval's last step: the union of the dense channel's hits and the lexical channel's,
// one fused score per candidate (reciprocal-rank fusion or a learned linear model over
// upper_fast.lexical.FUSION_FEATURES), and the best k. One call per query, no allocation once the
// scratch has grown to the largest candidate count seen.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "thresholds.h"

namespace upper_fast {

enum class FusionMethod : int { rrf = 0, learned = 1 };
constexpr std::size_t kFusionFeatures = 7;  // upper_fast.lexical.FUSION_FEATURES, in that order

struct FusionParams {
  FusionMethod method = FusionMethod::rrf;
  std::int64_t rrf_k = 60;                          // a hit at rank r adds 1 / (rrf_k + r)
  std::array<double, kFusionFeatures> weights{};    // learned only
  std::size_t n_words = 0;                          // the query's word count (features 5 and 6)
  int min_tier = 0;                                 // >= 1: hits below this tier (and non-finite scores) dropped
  std::size_t k = 0;                                // hits wanted
};

// The dense channel's hits, best first (already pruned): rows, hydrated scores, cosines, tiers.
struct DenseHits {
  const std::int64_t* rows;
  const float* scores;
  const float* cosines;
  const std::int8_t* tiers;
  std::size_t n;
};

// The lexical channel's hits, best first: rows and BM25 scores.
struct LexicalHits {
  const std::int64_t* rows;
  const float* bm25;
  std::size_t n;
};

// What a lexical-only hit is scored with: vectors (nv, d) f32 row-major (every lexical row < nv),
// boost (n,), and the rows removed from results (n,) (nonzero = removed; lexical hits on them are
// dropped). Dense rows index neither (their scores come with them).
struct FusionCatalogue {
  const float* vectors;
  const float* boost;
  const std::uint8_t* removed;
  std::size_t d;
};

struct FusionCandidate {
  std::int64_t row;
  float dense_score;     // hydrated score (exact <q, v> + boost for lexical-only hits)
  float cosine;
  float bm25;            // 0 when not a lexical hit
  std::int32_t dense_rank;    // 1-based, 0 = not found by the dense channel
  std::int32_t lexical_rank;  // 1-based, 0 = not found by the lexical channel
  std::int8_t tier;
  double fused;
};

// Per-thread buffers, grown to the largest query seen and reused.
struct FusionScratch {
  std::vector<FusionCandidate> candidates;
  std::vector<std::pair<std::int64_t, std::int32_t>> dense_by_row;  // (row, dense slot), sorted by row
  std::vector<std::int32_t> order;
};

// Fuses one query's two hit lists (q: the (d,) query vector) and writes the best min(k, kept)
// candidates, best first (fused score descending, ties: dense hits in their order, then lexical-only
// hits in theirs; a NaN score ranks last), to out_* (each with room for nd + nl entries):
// rows, fused scores (float32), cosines, tiers and channel bits (1 = dense, 2 = lexical).
// Returns how many were written. Every row must be in range (the caller checks).
//
// The union and features are those of upper_fast.lexical.fusion_features: dense hits keep their
// scores and slots; a lexical hit found by the dense channel takes its slot, the others follow in
// lexical order with cos = <q, v> (the SIMD kernel of upper_fast.rerank_exact), score cos + boost,
// their tier from the thresholds. RRF: 1 / (rrf_k + dense rank) + 1 / (rrf_k + lexical rank), each
// term 0 when that channel missed. Learned: sum of weights[i] * feature[i] in double, with
// bm25_rel = bm25 / (the best BM25 score) in float32 (what numpy computes).
std::size_t fuse_channels(const DenseHits& dense, const LexicalHits& lexical, const FusionCatalogue& catalogue,
                          const float* q, const HingeThresholds& thresholds, const FusionParams& params,
                          FusionScratch& scratch, std::int64_t* out_rows, float* out_scores, float* out_cosines,
                          std::int8_t* out_tiers, std::uint8_t* out_channels);

}  // namespace upper_fast
