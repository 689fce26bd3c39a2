// Skip-gram over session tokens with the pairs and negatives drawn inside the native pass: the
// center order, the window pairs, unigram^0.75 random negatives, the typed negatives and the
// category negatives of the item-interaction embeddings (training/upper_fast_train/item_interactions.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "skipgram.h"

namespace upper_fast {

// Everything the draws read, owned (the binding copies it in once, after checking every index).
struct SkipgramCorpus {
  std::vector<std::int64_t> tokens;            // (n_positions,) vocabulary ids of the session tokens, in order
  std::vector<std::int64_t> session_offsets;   // (n_sessions + 1,) [0] = 0, back = n_positions, non-decreasing
  std::vector<std::int64_t> session_of;        // (n_positions,) session of each position
  std::vector<std::int64_t> token_rows;        // (n_vocab,) title_terms row of each token, -1 = none
  std::vector<std::int64_t> title_terms;       // (n_rows, max_terms) subword buckets, 0 = padding
  std::vector<std::int64_t> typed;             // (n_positions, n_typed) typed negatives of a position as a context, -1 = none
  std::vector<std::uint8_t> only_viewed;       // (n_positions,) the session only viewed the position's product
  std::vector<std::int64_t> category_start;    // (n_vocab,) first slot of the token's category in category_members
  std::vector<std::int64_t> category_size;     // (n_vocab,) members of that category, 0 = none
  std::vector<std::int64_t> category_slot;     // (n_vocab,) the token's own slot in it, -1 = not a member
  std::vector<std::int64_t> category_members;  // view token ids grouped by category
  std::vector<double> alias_prob;              // (n_vocab,) Walker alias table of counts^0.75 (counts over tokens)
  std::vector<std::int64_t> alias_other;       // (n_vocab,)
  std::size_t n_vocab = 0, n_typed = 0, n_rows = 0, max_terms = 0;
  std::int64_t max_term = 0, max_token_row = -1;

  std::size_t n_positions() const { return tokens.size(); }
  // Derives session_of, the alias table and the maxima from the fields above (already checked).
  void finish();
};

// How one pass draws. Per pair: random_negatives unigram^0.75 draws, then (with typed) the n_typed
// typed negatives of the context, then category_negatives view tokens drawn uniformly from the other
// members of the context's category when the session only viewed the context's product and the
// category has another member (-1 otherwise). Each center position draws from its own generator,
// seeded from (seed, epoch, position): the draws do not depend on the thread count or the slicing.
struct SkipgramSampling {
  std::size_t window = 5, random_negatives = 5, category_negatives = 0;
  bool typed = false;
  std::uint64_t seed = 0, epoch = 0;

  std::size_t negatives_per_pair(const SkipgramCorpus& c) const {
    return random_negatives + (typed ? c.n_typed : 0) + category_negatives;
  }
};

// A permutation of the positions [0, n) drawn from (seed, epoch): the centers' order of one epoch.
void skipgram_epoch_order(std::int64_t* order, std::size_t n, std::uint64_t seed, std::uint64_t epoch);

// Pairs of every position as a center: both directions, contexts at most `window` apart in the session.
std::uint64_t skipgram_corpus_pairs(const SkipgramCorpus& c, std::size_t window);

struct SkipgramPassResult {
  double loss;          // summed -log s(pos) - sum log s(-neg)
  std::uint64_t pairs;  // (center, context) pairs trained
};

// One SGD pass over the centers order[0, n_groups) (positions, trusted), each with all its window
// pairs, hogwild over num_threads threads (0 = all cores); the update of csrc/skipgram.h, the
// learning rate falling linearly from lr_start (first center) to lr_end (last).
SkipgramPassResult skipgram_corpus_sgd(const SkipgramCorpus& c, const SkipgramSampling& s, const SkipgramTables& t,
                                       const std::int64_t* order, std::size_t n_groups, float lr_start, float lr_end,
                                       std::size_t num_threads);

// The pairs and negatives that skipgram_corpus_sgd draws for the same arguments, in its order:
// group_offsets (n_groups + 1), contexts (positions, n_pairs), negatives (n_pairs * negatives_per_pair).
void skipgram_corpus_draws(const SkipgramCorpus& c, const SkipgramSampling& s, const std::int64_t* order,
                           std::size_t n_groups, std::vector<std::int64_t>& group_offsets,
                           std::vector<std::int64_t>& contexts, std::vector<std::int64_t>& negatives);

}  // namespace upper_fast
