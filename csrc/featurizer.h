// Hashed term features: word unigrams, word bigrams and boundary-marked character trigrams of the
// normalised text, in one id space (docs/design.md, docs/featurizer.md):
//   0 = padding, words [1, 1+W), bigrams [1+W, 1+W+B), trigrams [1+W+B, 1+W+B+T).
// The hash is stable across runs, processes and platforms: FNV-1a 64 over a type prefix ("w:",
// "b:", "c:") and the UTF-8 bytes of the term, finalised by murmur3's fmix64, modulo the bucket count.
// With stem_plurals, every word is first reduced by the English plural rules of Harman's "S"
// stemmer (stem_plural below), so "doors" and "door" share their word, bigram and trigram ids.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "unicode_norm.h"

namespace upper_fast {

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;
// Largest accepted bucket count per term type; the whole vocabulary stays below 2^32.
constexpr std::int64_t kMaxBuckets = std::int64_t{1} << 30;

inline std::uint64_t fnv1a64(std::string_view bytes, std::uint64_t state = kFnvOffset) {
  for (unsigned char c : bytes) state = (state ^ c) * kFnvPrime;
  return state;
}

inline std::uint64_t fmix64(std::uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

// The length of word w[0, len) after English plural stemming, the rules of Harman's "S" stemmer
// (1991): "ies" -> "y" unless after "a" or "e" (writes the 'y'); otherwise a final "s" is dropped
// unless after "u" or "s" ("es" -> "e" and "s" -> "" both drop it). Words of fewer than 4 bytes are
// left as they are ("gas", "bus", "yes"). ASCII rules: a word ending in a multi-byte character is
// never changed.
inline std::size_t stem_plural(char* w, std::size_t len) {
  if (len < 4 || w[len - 1] != 's') return len;
  const char prev = w[len - 2];
  if (prev == 'u' || prev == 's') return len;
  if (prev == 'e' && w[len - 3] == 'i' && w[len - 4] != 'a' && w[len - 4] != 'e') {
    w[len - 3] = 'y';
    return len - 2;
  }
  return len - 1;
}

// Per-thread working memory for featurizing one text at a time without allocating.
// Cache-line aligned: each thread owns one, and their vector headers change on every text.
struct alignas(64) FeaturizerScratch {
  unicode::Scratch unicode;
  std::string normalized;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> words;  // (offset, length) in `normalized`
  std::vector<std::uint32_t> char_starts;                     // code point starts within one word
};

class Featurizer {
 public:
  // Throws std::invalid_argument unless every bucket count is in [1, kMaxBuckets].
  Featurizer(std::int64_t word_buckets, std::int64_t bigram_buckets, std::int64_t trigram_buckets,
             bool stem_plurals = false);

  std::int64_t word_buckets() const { return word_buckets_; }
  std::int64_t bigram_buckets() const { return bigram_buckets_; }
  std::int64_t trigram_buckets() const { return trigram_buckets_; }
  std::int64_t vocab_size() const { return 1 + word_buckets_ + bigram_buckets_ + trigram_buckets_; }
  bool stem_plurals() const { return stem_plurals_; }

  // The normal form (unicode::normalize_text). Throws unicode::Utf8Error.
  void normalize(std::string_view text, std::string& out, FeaturizerScratch& scratch) const;

  // Writes the first min(n_terms, max_terms) ids of `text` to out (words, bigrams, trigrams in
  // that order) and returns how many were written. Throws unicode::Utf8Error.
  std::size_t term_ids(std::string_view text, std::int64_t* out, std::size_t max_terms,
                       FeaturizerScratch& scratch) const;
  // All ids of `text`, untruncated.
  void term_ids(std::string_view text, std::vector<std::int64_t>& out, FeaturizerScratch& scratch) const;

  // Fills out (n, max_terms), zero-padded, over num_threads threads (0 = all cores). An invalid
  // text throws std::invalid_argument naming its index and byte offset.
  void featurize(const std::string_view* texts, std::size_t n, std::size_t max_terms, std::int64_t* out,
                 std::size_t num_threads) const;

 private:
  template <class Sink>
  void emit_terms(std::string_view text, FeaturizerScratch& scratch, Sink&& sink) const;

  std::int64_t word_buckets_, bigram_buckets_, trigram_buckets_;
  bool stem_plurals_;
  std::uint64_t word_state_, bigram_state_, trigram_state_;  // FNV state after the type prefix
};

}  // namespace upper_fast
