#include "skipgram.h"

#include <algorithm>
#include <vector>

#include "parallel.h"
#include "simd/dispatch.h"
#include "skipgram_step.h"

namespace upper_fast {

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
    std::vector<std::int64_t> terms(std::max<std::size_t>(t.max_terms, 1));
    skipgram_step::LossSum loss;
    for (std::size_t g = begin; g < end; ++g) {
      const float lr = static_cast<float>(lr_start + step * static_cast<double>(g));
      const std::size_t n_terms =
          skipgram_step::center_vector(k, t, pairs.centers[g], pairs.center_rows[g], h.data(), terms.data());
      std::fill(grad.begin(), grad.end(), 0.f);
      for (std::int64_t p = pairs.group_offsets[g]; p < pairs.group_offsets[g + 1]; ++p) {
        skipgram_step::target_step(k, t, h.data(), grad.data(), pairs.targets[p], true, lr, loss);
        const std::int64_t* neg = pairs.negatives + static_cast<std::size_t>(p) * kn;
        for (std::size_t j = 0; j < kn; ++j)
          if (neg[j] >= 0) skipgram_step::target_step(k, t, h.data(), grad.data(), neg[j], false, lr, loss);
      }
      skipgram_step::apply_group(k, t, pairs.centers[g], grad.data(), terms.data(), n_terms);
    }
    losses[tid] += loss.total();
  });
  double total = 0.0;
  for (double l : losses) total += l;
  return total;
}

}  // namespace upper_fast
