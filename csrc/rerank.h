// Exact re-ranking of ANN candidates: the index walks its graph in bf16/i8 storage, the server
// re-scores the walk's candidates against the full-precision vectors and keeps the best k.
#pragma once
#include <cstddef>
#include <cstdint>

namespace upper_fast {

// For one query q (d,): score_i = <q, vectors[rows[i]]> + bias[rows[i]] over the m candidate rows
// (rows < 0 are padding and skipped; every other row must be < n, checked by the caller), then the
// best min(k, valid) by score (ties: lower row first) into out_rows / out_scores, best first.
// A NaN score (NaN in a vector or bias) ranks as -inf. Returns how many were written. Candidate rows are prefetched a few ahead (random rows of a large
// table are cache misses). `scratch` holds m (score, row) pairs. No allocation.
struct RerankHit {
  float score;
  std::int64_t row;
};
std::size_t rerank_exact(const float* q, const float* vectors, const float* bias, std::size_t d,
                         const std::int64_t* rows, std::size_t m, std::size_t k, RerankHit* scratch,
                         std::int64_t* out_rows, float* out_scores);

}  // namespace upper_fast
