// Hydration: appending the non-embedding features to the tower vectors so that one inner product
// scores both. A product row becomes [emb ; scale * features], a query row [q ; weights], and
// <[q ; w], [e ; s * f]> = <q, e> + s * <w, f>.
#pragma once
#include <cstddef>

namespace upper_fast {

// out (n, d + f) row-major = [emb (n, d) ; scale * features (n, f)]. out must not alias the inputs.
void hydrate_products(const float* emb, const float* features, std::size_t n, std::size_t d,
                      std::size_t f, float scale, float* out, std::size_t num_threads);

// out (m, d + f) row-major = [q (m, d) ; weights (f,)] (the same weights on every row).
void hydrate_queries(const float* q, const float* weights, std::size_t m, std::size_t d,
                     std::size_t f, float* out, std::size_t num_threads);

}  // namespace upper_fast
