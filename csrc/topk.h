// Batched exact top-k by inner product ("hard-negative mining"): for each query, the k candidate
// rows with the largest <query, candidate>, without materialising the (m, n) score matrix.
#pragma once
#include <cstddef>
#include <cstdint>

namespace upper_fast {

// Element type of a row-major matrix: f32, or bf16 stored as the upper 16 bits of an f32.
enum class ElemType { f32, bf16 };

struct MatrixView {
  const void* data;
  ElemType type;
  std::size_t rows;
  std::size_t cols;
};

// Per query, the candidate rows that must not be returned (CSR: query i excludes
// indices[indptr[i] .. indptr[i+1])). Empty (indptr == nullptr) means no exclusions.
struct Exclusions {
  const std::int64_t* indptr = nullptr;
  const std::int64_t* indices = nullptr;
};

// Writes ids (m, k), scores (m, k), counts (m,); best first, ties broken by the lower candidate
// row; rows past counts[i] hold id -1 and score -inf. Throws std::invalid_argument when a score
// is NaN or +-inf (non-finite input or float overflow) or an exclusion is out of range.
// Candidate rows are split over num_threads (0 = all cores) and the partial results merged.
void topk_inner_product(const MatrixView& queries, const MatrixView& candidates, std::size_t k,
                        const Exclusions& exclude, std::size_t num_threads, std::int64_t* ids,
                        float* scores, std::int64_t* counts);

}  // namespace upper_fast
