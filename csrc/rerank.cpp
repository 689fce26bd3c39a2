#include "rerank.h"

#include <algorithm>
#include <limits>

#include "simd/dispatch.h"

namespace upper_fast {
namespace {

constexpr std::size_t kAhead = 4;  // candidate rows in flight (each d * 4 bytes, ~8 lines at d 128)

inline void prefetch_row(const float* row, std::size_t d) {
  const char* p = reinterpret_cast<const char*>(row);
  for (std::size_t off = 0; off < d * sizeof(float); off += 64) __builtin_prefetch(p + off, 0, 1);
}

}  // namespace

std::size_t rerank_exact(const float* q, const float* vectors, const float* bias, std::size_t d,
                         const std::int64_t* rows, std::size_t m, std::size_t k, RerankHit* scratch,
                         std::int64_t* out_rows, float* out_scores) {
  const simd::Kernels& kern = simd::active();
  for (std::size_t j = 0; j < m && j < kAhead; ++j)
    if (rows[j] >= 0) prefetch_row(vectors + static_cast<std::size_t>(rows[j]) * d, d);
  std::size_t valid = 0;
  for (std::size_t j = 0; j < m; ++j) {
    if (j + kAhead < m && rows[j + kAhead] >= 0)
      prefetch_row(vectors + static_cast<std::size_t>(rows[j + kAhead]) * d, d);
    const std::int64_t r = rows[j];
    if (r < 0) continue;
    const float* v = vectors + static_cast<std::size_t>(r) * d;
    float score = kern.dot_f32(q, v, d) + bias[r];
    if (score != score) score = -std::numeric_limits<float>::infinity();  // NaN ranks last (a strict order)
    scratch[valid++] = RerankHit{score, r};
  }
  const std::size_t keep = std::min(k, valid);
  auto better = [](const RerankHit& a, const RerankHit& b) {
    return a.score > b.score || (a.score == b.score && a.row < b.row);
  };
  std::partial_sort(scratch, scratch + keep, scratch + valid, better);
  for (std::size_t i = 0; i < keep; ++i) {
    out_rows[i] = scratch[i].row;
    out_scores[i] = scratch[i].score;
  }
  return keep;
}

}  // namespace upper_fast
