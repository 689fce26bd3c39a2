// The word2vec update shared by the skip-gram passes (csrc/skipgram.cpp over given pairs,
// csrc/skipgram_corpus.cpp over pairs and negatives drawn natively): one definition, so both
// descend the same objective with the same arithmetic.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"
#include "skipgram.h"

namespace upper_fast::skipgram_step {

// h = input[center] + the mean of the title's subword rows of `row` (-1 = none); the non-padding
// buckets are written to terms (room for t.max_terms); returns how many.
inline std::size_t center_vector(const simd::Kernels& k, const SkipgramTables& t, std::int64_t center, std::int64_t row,
                                 float* h, std::int64_t* terms) {
  const std::size_t d = t.dim;
  const float* in = t.input + static_cast<std::size_t>(center) * d;
  for (std::size_t i = 0; i < d; ++i) h[i] = in[i];
  std::size_t n = 0;
  if (t.subwords != nullptr && row >= 0) {
    const std::int64_t* tt = t.title_terms + static_cast<std::size_t>(row) * t.max_terms;
    for (std::size_t j = 0; j < t.max_terms; ++j)
      if (tt[j] > 0) terms[n++] = tt[j];
    const float share = n == 0 ? 0.f : 1.f / static_cast<float>(n);
    for (std::size_t j = 0; j < n; ++j) k.axpy_f32(share, t.subwords + static_cast<std::size_t>(terms[j]) * d, h, d);
  }
  return n;
}

// The summed loss: each target adds softplus(+-f) = max(+-f, 0) + log1p(exp(-|f|)); the second parts
// are kept as a product of (1 + exp(-|f|)) in (1, 2], whose log is taken when it grows large and at
// the end: one log per several hundred targets instead of one log1p per target.
struct LossSum {
  double linear = 0.0, product = 1.0;
  void add(float lin, float a) {
    linear += lin;
    product *= 1.0 + static_cast<double>(a);
    if (product > 0x1p900) flush();
  }
  void flush() {
    linear += std::log(product);
    product = 1.0;
  }
  double total() {
    flush();
    return linear;
  }
};

// One target (label 1 for the positive, 0 for a negative): output[target] moves by lr (label - s) h,
// grad gathers lr (label - s) output[target], s = sigmoid(f), f = <h, output[target]>; adds the loss
// term -log s (positive) or -log(1 - s) (negative). One exp of -|f| gives s and the loss without
// overflow.
inline void target_step(const simd::Kernels& k, const SkipgramTables& t, const float* h, float* grad,
                        std::int64_t target, bool positive, float lr, LossSum& loss) {
  const std::size_t d = t.dim;
  float* out = t.output + static_cast<std::size_t>(target) * d;
  const float f = k.dot_f32(h, out, d);
  const float a = std::exp(-std::fabs(f));
  const float s = f >= 0 ? 1.f / (1.f + a) : a / (1.f + a);
  const float g_lr = lr * ((positive ? 1.f : 0.f) - s);
  k.axpy_f32(g_lr, out, grad, d);
  k.axpy_f32(g_lr, h, out, d);
  loss.add(positive ? std::max(-f, 0.f) : std::max(f, 0.f), a);
}

// The group's input gradient goes to input[center] and, shared equally, to its title's subword rows.
inline void apply_group(const simd::Kernels& k, const SkipgramTables& t, std::int64_t center, const float* grad,
                        const std::int64_t* terms, std::size_t n_terms) {
  const std::size_t d = t.dim;
  k.axpy_f32(1.f, grad, t.input + static_cast<std::size_t>(center) * d, d);
  if (n_terms == 0) return;
  const float share = 1.f / static_cast<float>(n_terms);
  for (std::size_t j = 0; j < n_terms; ++j) k.axpy_f32(share, grad, t.subwords + static_cast<std::size_t>(terms[j]) * d, d);
}

}  // namespace upper_fast::skipgram_step
