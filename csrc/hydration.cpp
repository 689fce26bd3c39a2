#include "hydration.h"

#include <cstring>

#include "parallel.h"

namespace upper_fast {
namespace {
// Rows per task: big enough that thread start-up is amortised (small batches stay on one thread).
constexpr std::size_t kGrainBytes = 1 << 20;

std::size_t grain_rows(std::size_t row_floats) {
  const std::size_t bytes = row_floats * sizeof(float);
  return bytes == 0 ? 1 : kGrainBytes / bytes + 1;
}
}  // namespace

void hydrate_products(const float* emb, const float* features, std::size_t n, std::size_t d,
                      std::size_t f, float scale, float* out, std::size_t num_threads) {
  const std::size_t w = d + f;
  parallel_for(n, num_threads, grain_rows(w), [&](std::size_t b, std::size_t e, std::size_t) {
    for (std::size_t i = b; i < e; ++i) {
      float* o = out + i * w;
      if (d > 0) std::memcpy(o, emb + i * d, d * sizeof(float));
      const float* fi = features + i * f;
      for (std::size_t j = 0; j < f; ++j) o[d + j] = scale * fi[j];
    }
  });
}

void hydrate_queries(const float* q, const float* weights, std::size_t m, std::size_t d,
                     std::size_t f, float* out, std::size_t num_threads) {
  const std::size_t w = d + f;
  parallel_for(m, num_threads, grain_rows(w), [&](std::size_t b, std::size_t e, std::size_t) {
    for (std::size_t i = b; i < e; ++i) {
      float* o = out + i * w;
      if (d > 0) std::memcpy(o, q + i * d, d * sizeof(float));
      if (f > 0) std::memcpy(o + d, weights, f * sizeof(float));
    }
  });
}

}  // namespace upper_fast
