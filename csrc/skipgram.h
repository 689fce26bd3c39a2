// Skip-gram with negative sampling over grouped (center, context) pairs: the SGD inner loop of the
// item-interaction embeddings (word2vec's update, fastText's subword input vectors).
#pragma once
#include <cstddef>
#include <cstdint>

namespace upper_fast {

// The pairs of one SGD pass, grouped by center occurrence: the pairs of group g are
// [group_offsets[g], group_offsets[g + 1]) and all share the center token centers[g].
struct SkipgramPairs {
  const std::int64_t* centers;        // (n_groups,) token ids in [0, n_tokens)
  const std::int64_t* center_rows;    // (n_groups,) row of title_terms, -1 = no title subwords
  const std::int64_t* group_offsets;  // (n_groups + 1,) non-decreasing, [0] = 0, [n_groups] = n_pairs
  const std::int64_t* targets;        // (n_pairs,) positive context token ids
  const std::int64_t* negatives;      // (n_pairs, n_negatives) token ids, -1 = none
  std::size_t n_groups;
  std::size_t n_negatives;
};

// The tables the pass updates in place (hogwild across threads, as word2vec and fastText do).
struct SkipgramTables {
  float* input;                       // (n_tokens, dim) token input vectors
  float* output;                      // (n_tokens, dim) output (context) vectors
  float* subwords;                    // (n_buckets, dim) or nullptr: title subword input vectors
  const std::int64_t* title_terms;    // (n_rows, max_terms) bucket ids, 0 = padding (row 0 never trained)
  std::size_t n_tokens, dim, n_buckets, n_rows, max_terms;
};

// One pass of SGD. A group's input vector is input[center] + the mean of its title's subword rows;
// each positive (label 1) and negative (label 0) target t moves output[t] by lr (label - s) h and the
// group's input by the summed lr (label - s) output[t], s = sigmoid(<h, output[t]>); the input and
// subword rows are written once per group. The learning rate falls linearly from lr_start (first
// group) to lr_end (last group). Returns the summed loss -log s(pos) - sum log s(-neg). Indices are
// trusted (the binding checks them). Groups are split over num_threads threads (0 = all cores).
double skipgram_sgd(const SkipgramPairs& pairs, const SkipgramTables& tables, float lr_start, float lr_end,
                    std::size_t num_threads);

}  // namespace upper_fast
