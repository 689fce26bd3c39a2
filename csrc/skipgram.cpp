#include "skipgram.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "parallel.h"
#include "simd/dispatch.h"

namespace upper_fast {
namespace {

// log(1 + exp(-x)) without overflow: -log sigmoid(x) (float: the loss is a report, summed in double).
inline float softplus_neg(float x) {
  return x > 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x));
}

}  // namespace

double skipgram_sgd(const SkipgramPairs& pairs, const SkipgramTables& t, float lr_start, float lr_end,
                    std::size_t num_threads) {
  const simd::Kernels& k = simd::active();
  const std::size_t d = t.dim, kn = pairs.n_negatives, n = pairs.n_groups;
  const std::size_t threads = std::max<std::size_t>(1, std::min(resolve_threads(num_threads), n));
  std::vector<double> losses(threads, 0.0);
  const double step = n > 1 ? (static_cast<double>(lr_end) - lr_start) / static_cast<double>(n - 1) : 0.0;
  // Small chunks keep the learning-rate schedule and the threads' progress close together.
  parallel_for(n, threads, 256, [&](std::size_t begin, std::size_t end, std::size_t tid) {
    std::vector<float> h(d), grad(d);
    std::vector<std::int64_t> terms;
    double loss = 0.0;
    for (std::size_t g = begin; g < end; ++g) {
      const float lr = static_cast<float>(lr_start + step * static_cast<double>(g));
      const float* in = t.input + static_cast<std::size_t>(pairs.centers[g]) * d;
      std::copy(in, in + d, h.begin());
      terms.clear();
      const std::int64_t row = pairs.center_rows[g];
      if (t.subwords != nullptr && row >= 0) {
        const std::int64_t* tt = t.title_terms + static_cast<std::size_t>(row) * t.max_terms;
        for (std::size_t j = 0; j < t.max_terms; ++j)
          if (tt[j] > 0) terms.push_back(tt[j]);
        const float share = terms.empty() ? 0.f : 1.f / static_cast<float>(terms.size());
        for (std::int64_t b : terms) k.axpy_f32(share, t.subwords + static_cast<std::size_t>(b) * d, h.data(), d);
      }
      std::fill(grad.begin(), grad.end(), 0.f);
      for (std::int64_t p = pairs.group_offsets[g]; p < pairs.group_offsets[g + 1]; ++p) {
        const std::int64_t* neg = pairs.negatives + static_cast<std::size_t>(p) * kn;
        for (std::size_t j = 0; j <= kn; ++j) {
          const std::int64_t target = j == 0 ? pairs.targets[p] : neg[j - 1];
          if (target < 0) continue;
          float* out = t.output + static_cast<std::size_t>(target) * d;
          const float f = k.dot_f32(h.data(), out, d);
          const float label = j == 0 ? 1.f : 0.f;
          const float s = 1.f / (1.f + std::exp(-f));
          loss += j == 0 ? softplus_neg(f) : softplus_neg(-f);
          const float g_lr = lr * (label - s);
          k.axpy_f32(g_lr, out, grad.data(), d);
          k.axpy_f32(g_lr, h.data(), out, d);
        }
      }
      k.axpy_f32(1.f, grad.data(), t.input + static_cast<std::size_t>(pairs.centers[g]) * d, d);
      if (!terms.empty()) {
        const float share = 1.f / static_cast<float>(terms.size());
        for (std::int64_t b : terms) k.axpy_f32(share, grad.data(), t.subwords + static_cast<std::size_t>(b) * d, d);
      }
    }
    losses[tid] += loss;
  });
  double total = 0.0;
  for (double l : losses) total += l;
  return total;
}

}  // namespace upper_fast
