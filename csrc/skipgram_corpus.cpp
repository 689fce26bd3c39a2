#include "skipgram_corpus.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "parallel.h"
#include "simd/dispatch.h"
#include "skipgram_step.h"

namespace upper_fast {
namespace {

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// splitmix64 (Steele, Lea and Flood 2014): one add and one mix per draw, no allocation.
class SplitMix64 {
 public:
  SplitMix64(std::uint64_t seed, std::uint64_t epoch, std::uint64_t stream)
      : state_(mix64(mix64(mix64(seed + kGolden) ^ (epoch + 1) * kGolden) ^ (stream + 1) * kGolden)) {}
  std::uint64_t next() { return mix64(state_ += kGolden); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n), n > 0.
  std::size_t below(std::size_t n) {
    const auto r = static_cast<std::size_t>(uniform() * static_cast<double>(n));
    return r < n ? r : n - 1;
  }

 private:
  std::uint64_t state_;
};

inline void prefetch_row(const float* row, std::size_t d) {
#if defined(__GNUC__) || defined(__clang__)
  for (std::size_t i = 0; i < d; i += 16) __builtin_prefetch(row + i, 1);
#else
  (void)row;
  (void)d;
#endif
}

inline std::int64_t unigram_draw(const SkipgramCorpus& c, SplitMix64& rng) {
  const std::size_t i = rng.below(c.n_vocab);
  return rng.uniform() < c.alias_prob[i] ? static_cast<std::int64_t>(i) : c.alias_other[i];
}

// Calls pair(context_position) for each window pair of the center `pos` after writing its negatives
// to neg (negatives_per_pair entries). Contexts come in word2vec's order of distance: +1, -1, +2, -2, ...
template <class Pair>
inline void draw_group(const SkipgramCorpus& c, const SkipgramSampling& s, std::int64_t pos, std::int64_t* neg,
                       Pair&& pair) {
  SplitMix64 rng(s.seed, s.epoch, static_cast<std::uint64_t>(pos));
  const std::int64_t session = c.session_of[static_cast<std::size_t>(pos)];
  const std::int64_t lo = c.session_offsets[static_cast<std::size_t>(session)];
  const std::int64_t hi = c.session_offsets[static_cast<std::size_t>(session) + 1];
  const auto window = static_cast<std::int64_t>(std::min<std::size_t>(s.window, c.n_positions()));
  for (std::int64_t gap = 1; gap <= window; ++gap) {
    for (const std::int64_t q : {pos + gap, pos - gap}) {
      if (q < lo || q >= hi) continue;
      std::int64_t* out = neg;
      for (std::size_t r = 0; r < s.random_negatives; ++r) *out++ = unigram_draw(c, rng);
      if (s.typed) {
        const std::int64_t* typed = c.typed.data() + static_cast<std::size_t>(q) * c.n_typed;
        out = std::copy(typed, typed + c.n_typed, out);
      }
      if (s.category_negatives > 0) {
        const auto ctx = static_cast<std::size_t>(c.tokens[static_cast<std::size_t>(q)]);
        const std::int64_t size = c.category_size[ctx];
        const bool drawn = c.only_viewed[static_cast<std::size_t>(q)] != 0 && size > 1;
        const std::int64_t slot = c.category_slot[ctx];
        for (std::size_t r = 0; r < s.category_negatives; ++r) {
          if (!drawn) {
            *out++ = -1;
            continue;
          }
          // Uniform over the category's other members: skip the context's own slot.
          auto k = static_cast<std::int64_t>(rng.below(static_cast<std::size_t>(slot >= 0 ? size - 1 : size)));
          if (slot >= 0 && k >= slot) ++k;
          *out++ = c.category_members[static_cast<std::size_t>(c.category_start[ctx] + k)];
        }
      }
      pair(q);
    }
  }
}

}  // namespace

void SkipgramCorpus::finish() {
  session_of.assign(tokens.size(), 0);
  for (std::size_t g = 0; g + 1 < session_offsets.size(); ++g)
    std::fill(session_of.begin() + session_offsets[g], session_of.begin() + session_offsets[g + 1],
              static_cast<std::int64_t>(g));
  // Walker's alias method (Vose's construction): exact draws from counts^0.75 in O(1).
  std::vector<double> weight(n_vocab, 0.0);
  for (std::int64_t t : tokens) weight[static_cast<std::size_t>(t)] += 1.0;
  double total = 0.0;
  for (double& w : weight) total += (w = std::pow(w, 0.75));
  alias_prob.assign(n_vocab, 1.0);
  alias_other.resize(n_vocab);
  std::vector<std::size_t> small, large;
  for (std::size_t i = 0; i < n_vocab; ++i) {
    alias_other[i] = static_cast<std::int64_t>(i);
    weight[i] = total > 0 ? weight[i] * static_cast<double>(n_vocab) / total : 1.0;
    (weight[i] < 1.0 ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const std::size_t a = small.back(), b = large.back();
    small.pop_back();
    alias_prob[a] = weight[a];
    alias_other[a] = static_cast<std::int64_t>(b);
    weight[b] -= 1.0 - weight[a];
    if (weight[b] < 1.0) {
      large.pop_back();
      small.push_back(b);
    }
  }
  // What is left holds probability 1 up to rounding.
  for (std::size_t i : small) alias_prob[i] = 1.0;
  for (std::size_t i : large) alias_prob[i] = 1.0;
  max_term = 0;
  for (std::int64_t b : title_terms) max_term = std::max(max_term, b);
  max_token_row = -1;
  for (std::int64_t r : token_rows) max_token_row = std::max(max_token_row, r);
}

void skipgram_epoch_order(std::int64_t* order, std::size_t n, std::uint64_t seed, std::uint64_t epoch) {
  for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<std::int64_t>(i);
  SplitMix64 rng(seed, epoch, ~std::uint64_t{0});
  for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);  // Fisher-Yates
}

std::uint64_t skipgram_corpus_pairs(const SkipgramCorpus& c, std::size_t window) {
  std::uint64_t pairs = 0;
  for (std::size_t g = 0; g + 1 < c.session_offsets.size(); ++g) {
    const auto len = static_cast<std::uint64_t>(c.session_offsets[g + 1] - c.session_offsets[g]);
    for (std::uint64_t gap = 1; gap <= window && gap < len; ++gap) pairs += 2 * (len - gap);
  }
  return pairs;
}

SkipgramPassResult skipgram_corpus_sgd(const SkipgramCorpus& c, const SkipgramSampling& s, const SkipgramTables& t,
                                       const std::int64_t* order, std::size_t n_groups, float lr_start, float lr_end,
                                       std::size_t num_threads) {
  const simd::Kernels& k = simd::active();
  const std::size_t d = t.dim, kn = s.negatives_per_pair(c), n = n_groups;
  const std::size_t threads = std::max<std::size_t>(1, std::min(resolve_threads(num_threads), n));
  const std::size_t n_terms_max = std::max<std::size_t>(t.max_terms, 1);
  // Per-thread scratch, allocated once: the loop below allocates nothing.
  std::vector<float> scratch_f(threads * 2 * d);
  std::vector<std::int64_t> scratch_i(threads * (n_terms_max + kn + 1));
  std::vector<double> losses(threads, 0.0);
  std::vector<std::uint64_t> pairs(threads, 0);
  const double step = n > 1 ? (static_cast<double>(lr_end) - lr_start) / static_cast<double>(n - 1) : 0.0;
  parallel_for(n, threads, 256, [&](std::size_t begin, std::size_t end, std::size_t tid) {
    float* h = scratch_f.data() + tid * 2 * d;
    float* grad = h + d;
    std::int64_t* terms = scratch_i.data() + tid * (n_terms_max + kn + 1);
    std::int64_t* neg = terms + n_terms_max;
    skipgram_step::LossSum loss;
    std::uint64_t done = 0;
    for (std::size_t g = begin; g < end; ++g) {
      const float lr = static_cast<float>(lr_start + step * static_cast<double>(g));
      const std::int64_t pos = order[g];
      const std::int64_t center = c.tokens[static_cast<std::size_t>(pos)];
      const std::size_t n_terms = skipgram_step::center_vector(
          k, t, center, c.token_rows[static_cast<std::size_t>(center)], h, terms);
      std::fill(grad, grad + d, 0.f);
      draw_group(c, s, pos, neg, [&](std::int64_t q) {
        // The negatives are random rows: ask for them while the positive is scored.
        for (std::size_t j = 0; j < kn; ++j)
          if (neg[j] >= 0) prefetch_row(t.output + static_cast<std::size_t>(neg[j]) * d, d);
        skipgram_step::target_step(k, t, h, grad, c.tokens[static_cast<std::size_t>(q)], true, lr, loss);
        for (std::size_t j = 0; j < kn; ++j)
          if (neg[j] >= 0) skipgram_step::target_step(k, t, h, grad, neg[j], false, lr, loss);
        ++done;
      });
      skipgram_step::apply_group(k, t, center, grad, terms, n_terms);
    }
    losses[tid] += loss.total();
    pairs[tid] += done;
  });
  SkipgramPassResult result{0.0, 0};
  for (std::size_t i = 0; i < threads; ++i) {
    result.loss += losses[i];
    result.pairs += pairs[i];
  }
  return result;
}

void skipgram_corpus_draws(const SkipgramCorpus& c, const SkipgramSampling& s, const std::int64_t* order,
                           std::size_t n_groups, std::vector<std::int64_t>& group_offsets,
                           std::vector<std::int64_t>& contexts, std::vector<std::int64_t>& negatives) {
  const std::size_t kn = s.negatives_per_pair(c);
  std::vector<std::int64_t> neg(kn + 1);
  group_offsets.assign(1, 0);
  contexts.clear();
  negatives.clear();
  for (std::size_t g = 0; g < n_groups; ++g) {
    draw_group(c, s, order[g], neg.data(), [&](std::int64_t q) {
      contexts.push_back(q);
      negatives.insert(negatives.end(), neg.begin(), neg.begin() + static_cast<std::ptrdiff_t>(kn));
    });
    group_offsets.push_back(static_cast<std::int64_t>(contexts.size()));
  }
}

}  // namespace upper_fast
