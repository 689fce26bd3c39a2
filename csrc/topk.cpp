#include "topk.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.h"
#include "simd/dispatch.h"

namespace upper_fast {
namespace {

struct Hit {
  float score;
  std::int64_t id;
};

// Strict order "a ranks before b": higher score, then lower row.
inline bool better(const Hit& a, const Hit& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedFree>;

// 64-byte aligned so the micro-kernels may use aligned vector loads on the packed panels.
AlignedFloats aligned_floats(std::size_t n) {
  std::size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (p == nullptr) throw std::bad_alloc();
  return AlignedFloats(static_cast<float*>(p));
}

inline float elem(const MatrixView& m, std::size_t r, std::size_t c) {
  if (m.type == ElemType::f32) return static_cast<const float*>(m.data)[r * m.cols + c];
  return simd::bf16_to_float(static_cast<const std::uint16_t*>(m.data)[r * m.cols + c]);
}

// Candidate rows per block: the block (read once per query panel) stays in L2 next to the packed
// queries, so memory traffic for the candidates is one pass regardless of the number of queries.
std::size_t block_rows(std::size_t d) {
  std::size_t rows = (96 * 1024) / (d * sizeof(float));
  rows = std::clamp<std::size_t>(rows, 12, 1020);
  return rows / 12 * 12;
}

// The k best hits per query over one contiguous range of candidate rows (one thread's share).
struct PartialTopK {
  std::vector<Hit> heap;           // m * cap entries, per query a heap whose front is the worst
  std::vector<std::size_t> size;   // m
};

}  // namespace

void topk_inner_product(const MatrixView& queries, const MatrixView& candidates, std::size_t k,
                        const Exclusions& exclude, std::size_t num_threads, std::int64_t* ids,
                        float* scores, std::int64_t* counts) {
  const std::size_t m = queries.rows, n = candidates.rows, d = queries.cols;
  if (candidates.cols != d)
    throw std::invalid_argument("queries and candidates differ in dimension");
  if (k == 0) throw std::invalid_argument("k must be positive");
  if (d == 0) throw std::invalid_argument("dimension must be positive");

  // Exclusions: sorted per query so a passing candidate is checked by binary search.
  std::vector<std::int64_t> excluded;
  if (exclude.indptr != nullptr) {
    excluded.assign(exclude.indices, exclude.indices + exclude.indptr[m]);
    for (std::size_t i = 0; i < m; ++i) {
      auto b = excluded.begin() + exclude.indptr[i], e = excluded.begin() + exclude.indptr[i + 1];
      for (auto it = b; it != e; ++it)
        if (*it < 0 || static_cast<std::size_t>(*it) >= n)
          throw std::invalid_argument("exclude index " + std::to_string(*it) + " for query " +
                                      std::to_string(i) + " is outside [0, " + std::to_string(n) +
                                      "): exclude holds candidate row numbers");
      std::sort(b, e);
    }
  }
  auto is_excluded = [&](std::size_t q, std::int64_t id) {
    if (exclude.indptr == nullptr) return false;
    auto b = excluded.begin() + exclude.indptr[q], e = excluded.begin() + exclude.indptr[q + 1];
    return std::binary_search(b, e, id);
  };

  const simd::Kernels& kern = simd::active();
  const std::size_t P = kern.panel;
  const std::size_t panels = (m + P - 1) / P;
  const std::size_t cap = std::min(k, n);  // no query can have more than n hits

  // Queries packed once, k-major per panel of P queries, zero-padded (converted from bf16).
  AlignedFloats qpack = aligned_floats(panels * d * P);
  for (std::size_t p = 0; p < panels; ++p)
    for (std::size_t c = 0; c < d; ++c)
      for (std::size_t l = 0; l < P; ++l) {
        const std::size_t q = p * P + l;
        qpack[(p * d + c) * P + l] = q < m ? elem(queries, q, c) : 0.f;
      }

  const std::size_t nb = block_rows(d);
  // Work is split into contiguous candidate ranges (each with its own heaps, merged at the end;
  // candidates are then read once in total) and, when there are too few candidates to keep every
  // thread busy, also into groups of query panels (which share a range's heaps, disjoint rows).
  const std::size_t want = resolve_threads(num_threads);
  const std::size_t ranges = std::min(want, std::max<std::size_t>(1, n / (4 * nb)));
  const std::size_t groups = std::min(std::max<std::size_t>(1, want / ranges), std::max<std::size_t>(1, panels));
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<PartialTopK> parts(cap > 0 ? ranges : 0);
  for (PartialTopK& part : parts) {
    part.heap.resize(m * cap);
    part.size.assign(m, 0);
  }

  if (cap > 0) {
    parallel_for(ranges * groups, want, 1, [&](std::size_t w_begin, std::size_t w_end, std::size_t) {
      for (std::size_t w = w_begin; w < w_end; ++w) {
        const std::size_t t = w / groups, g = w % groups;
        const std::size_t r_begin = n * t / ranges, r_end = n * (t + 1) / ranges;
        const std::size_t p_begin = panels * g / groups, p_end = panels * (g + 1) / groups;
        PartialTopK& part = parts[t];
        // Live cut per query lane: -inf until its heap is full, then the worst kept score;
        // padding lanes get +inf so they never report a hit.
        std::vector<float> thr(panels * P, -inf);
        for (std::size_t q = m; q < panels * P; ++q) thr[q] = inf;
        std::vector<float> tile(nb * P);
        std::vector<std::uint32_t> mask(nb);
        AlignedFloats block = candidates.type == ElemType::bf16 ? aligned_floats(nb * d) : nullptr;

        for (std::size_t r0 = r_begin; r0 < r_end; r0 += nb) {
          const std::size_t rows = std::min(nb, r_end - r0);
          const float* cand;
          if (candidates.type == ElemType::f32) {
            cand = static_cast<const float*>(candidates.data) + r0 * d;
          } else {
            kern.bf16_to_f32(static_cast<const std::uint16_t*>(candidates.data) + r0 * d, block.get(), rows * d);
            cand = block.get();
          }
          for (std::size_t p = p_begin; p < p_end; ++p) {
            float* pthr = thr.data() + p * P;
            if (!kern.score_panel_f32(qpack.get() + p * d * P, cand, rows, d, pthr, tile.data(), mask.data()))
              throw std::invalid_argument(
                  "a score is NaN or infinite: queries/candidates contain NaN or inf, or their "
                  "inner products overflow float32");
            for (std::size_t c = 0; c < rows; ++c) {
              for (std::uint32_t bits = mask[c]; bits != 0; bits &= bits - 1) {
                const std::size_t lane = static_cast<std::size_t>(__builtin_ctz(bits));
                const float s = tile[c * P + lane];
                if (!(s > pthr[lane])) continue;  // cut rose since the tile was scored
                const std::size_t q = p * P + lane;
                const Hit hit{s, static_cast<std::int64_t>(r0 + c)};
                if (is_excluded(q, hit.id)) continue;
                Hit* h = part.heap.data() + q * cap;
                std::size_t& sz = part.size[q];
                if (sz < cap) {
                  h[sz++] = hit;
                  std::push_heap(h, h + sz, better);
                } else {
                  std::pop_heap(h, h + cap, better);
                  h[cap - 1] = hit;
                  std::push_heap(h, h + cap, better);
                }
                if (sz == cap) pthr[lane] = h[0].score;
              }
            }
          }
        }
      }
    });
  }

  // Merge the per-range results (ranges are disjoint, so no duplicates).
  std::vector<Hit> merged;
  merged.reserve(ranges * cap);
  for (std::size_t q = 0; q < m; ++q) {
    merged.clear();
    if (cap > 0)
      for (const PartialTopK& part : parts)
        merged.insert(merged.end(), part.heap.begin() + q * cap, part.heap.begin() + q * cap + part.size[q]);
    const std::size_t keep = std::min(cap, merged.size());
    std::partial_sort(merged.begin(), merged.begin() + keep, merged.end(), better);
    for (std::size_t j = 0; j < k; ++j) {
      ids[q * k + j] = j < keep ? merged[j].id : -1;
      scores[q * k + j] = j < keep ? merged[j].score : -inf;
    }
    counts[q] = static_cast<std::int64_t>(keep);
  }
}

}  // namespace upper_fast
