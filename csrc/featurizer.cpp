#include "featurizer.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "parallel.h"

namespace upper_fast {
namespace {

void check_buckets(const char* name, std::int64_t value) {
  if (value < 1 || value > kMaxBuckets)
    throw std::invalid_argument(std::string(name) + " must be in [1, " + std::to_string(kMaxBuckets) +
                                "], got " + std::to_string(value));
}

inline std::int64_t bucket(std::uint64_t state, std::int64_t buckets) {
  return static_cast<std::int64_t>(fmix64(state) % static_cast<std::uint64_t>(buckets));
}

}  // namespace

Featurizer::Featurizer(std::int64_t word_buckets, std::int64_t bigram_buckets, std::int64_t trigram_buckets,
                       bool stem_plurals)
    : word_buckets_(word_buckets),
      bigram_buckets_(bigram_buckets),
      trigram_buckets_(trigram_buckets),
      stem_plurals_(stem_plurals),
      word_state_(fnv1a64("w:")),
      bigram_state_(fnv1a64("b:")),
      trigram_state_(fnv1a64("c:")) {
  check_buckets("word_buckets", word_buckets);
  check_buckets("bigram_buckets", bigram_buckets);
  check_buckets("trigram_buckets", trigram_buckets);
}

void Featurizer::normalize(std::string_view text, std::string& out, FeaturizerScratch& scratch) const {
  unicode::normalize_text(text, out, scratch.unicode);
}

// Calls sink(id) for every term in order; stops early when sink returns false.
template <class Sink>
void Featurizer::emit_terms(std::string_view text, FeaturizerScratch& scratch, Sink&& sink) const {
  unicode::normalize_text(text, scratch.normalized, scratch.unicode);
  std::string& s = scratch.normalized;
  auto& words = scratch.words;
  words.clear();
  std::size_t start = 0;
  for (std::size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == ' ') {
      if (i > start) {
        // Stemming shortens a word in place (at most one byte rewritten), so the offsets stay valid.
        const std::size_t len = stem_plurals_ ? stem_plural(s.data() + start, i - start) : i - start;
        words.emplace_back(static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(len));
      }
      start = i + 1;
    }
  }
  auto word = [&](std::size_t k) { return std::string_view(s.data() + words[k].first, words[k].second); };

  for (std::size_t k = 0; k < words.size(); ++k)
    if (!sink(1 + bucket(fnv1a64(word(k), word_state_), word_buckets_))) return;

  const std::int64_t bigram_base = 1 + word_buckets_;
  for (std::size_t k = 0; k + 1 < words.size(); ++k) {
    std::uint64_t h = fnv1a64(word(k), bigram_state_);
    h = (h ^ static_cast<unsigned char>(' ')) * kFnvPrime;
    if (!sink(bigram_base + bucket(fnv1a64(word(k + 1), h), bigram_buckets_))) return;
  }

  // Trigrams of "#" + word + "#" over code points: a word of k code points gives k trigrams.
  const std::int64_t trigram_base = 1 + word_buckets_ + bigram_buckets_;
  auto& starts = scratch.char_starts;
  for (std::size_t k = 0; k < words.size(); ++k) {
    const std::string_view w = word(k);
    starts.clear();
    for (std::uint32_t i = 0; i < w.size(); ++i)
      if ((static_cast<unsigned char>(w[i]) & 0xC0) != 0x80) starts.push_back(i);
    const std::size_t n_chars = starts.size();
    starts.push_back(static_cast<std::uint32_t>(w.size()));
    // Position p in the marked sequence: 0 and n_chars + 1 are '#', p in [1, n_chars] is char p - 1.
    auto feed = [&](std::uint64_t h, std::size_t p) {
      if (p == 0 || p == n_chars + 1) return (h ^ static_cast<unsigned char>('#')) * kFnvPrime;
      return fnv1a64(w.substr(starts[p - 1], starts[p] - starts[p - 1]), h);
    };
    for (std::size_t t = 0; t < n_chars; ++t) {
      const std::uint64_t h = feed(feed(feed(trigram_state_, t), t + 1), t + 2);
      if (!sink(trigram_base + bucket(h, trigram_buckets_))) return;
    }
  }
}

std::size_t Featurizer::term_ids(std::string_view text, std::int64_t* out, std::size_t max_terms,
                                 FeaturizerScratch& scratch) const {
  std::size_t n = 0;
  if (max_terms == 0) return 0;
  emit_terms(text, scratch, [&](std::int64_t id) {
    out[n++] = id;
    return n < max_terms;
  });
  return n;
}

void Featurizer::term_ids(std::string_view text, std::vector<std::int64_t>& out, FeaturizerScratch& scratch) const {
  out.clear();
  emit_terms(text, scratch, [&](std::int64_t id) {
    out.push_back(id);
    return true;
  });
}

void Featurizer::featurize(const std::string_view* texts, std::size_t n, std::size_t max_terms, std::int64_t* out,
                           std::size_t num_threads) const {
  std::vector<FeaturizerScratch> scratch(resolve_threads(num_threads));
  parallel_for(n, num_threads, 512, [&](std::size_t begin, std::size_t end, std::size_t tid) {
    FeaturizerScratch& sc = scratch[tid];
    for (std::size_t i = begin; i < end; ++i) {
      std::int64_t* row = out + i * max_terms;
      std::size_t written;
      try {
        written = term_ids(texts[i], row, max_terms, sc);
      } catch (const unicode::Utf8Error& e) {
        throw std::invalid_argument("texts[" + std::to_string(i) + "]: " + e.what());
      }
      std::fill(row + written, row + max_terms, std::int64_t{0});
    }
  });
}

}  // namespace upper_fast
