#include "thresholds.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace upper_fast {

HingeThresholds::HingeThresholds(float click, float favorite, float add_to_cart, float purchase,
                                 float negative)
    : theta_{negative, click, favorite, add_to_cart, purchase} {
  static const char* names[5] = {"negative", "click", "favorite", "add_to_cart", "purchase"};
  for (int i = 0; i < 5; ++i)
    if (!std::isfinite(theta_[i]))
      throw std::invalid_argument(std::string("threshold '") + names[i] + "' must be finite");
  if (!(negative < click))
    throw std::invalid_argument("thresholds need negative < click (got negative=" +
                                std::to_string(negative) + ", click=" + std::to_string(click) + ")");
  for (int i = 1; i < 4; ++i)
    if (!(theta_[i] <= theta_[i + 1]))
      throw std::invalid_argument(std::string("thresholds need ") + names[i] + " <= " + names[i + 1] +
                                  " (click <= favorite <= add_to_cart <= purchase)");
}

void HingeThresholds::prune(const float* scores, std::size_t n, int min_tier, std::uint8_t* keep) const {
  const float cut = theta_[static_cast<std::size_t>(min_tier)];
  for (std::size_t i = 0; i < n; ++i) keep[i] = scores[i] >= cut;
}

namespace {
// Highest t in 1..4 with score >= theta[t], else 0 (tier() and finish_hits()).
inline std::int8_t tier_of(float score, const std::array<float, 5>& theta) {
  std::int8_t t = 0;
  for (int c = 1; c <= kNumTypes; ++c)
    if (score >= theta[static_cast<std::size_t>(c)]) t = static_cast<std::int8_t>(c);
  return t;
}
}  // namespace

void HingeThresholds::tier(const float* scores, std::size_t n, std::int8_t* tiers) const {
  for (std::size_t i = 0; i < n; ++i) tiers[i] = tier_of(scores[i], theta_);
}

std::size_t HingeThresholds::finish_hits(const std::int64_t* ids, const float* scores, std::size_t m,
                                         const float* boost, std::size_t k, int min_tier, bool prune,
                                         std::int64_t* out_ids, float* out_scores, float* out_cos,
                                         std::int8_t* out_tiers) const {
  constexpr std::size_t kAhead = 8;  // boost entries of random rows are cache misses
  for (std::size_t j = 0; j < m && j < kAhead; ++j)
    if (ids[j] >= 0) __builtin_prefetch(boost + ids[j], 0, 1);
  const float cut = theta_[static_cast<std::size_t>(min_tier)];
  std::size_t out = 0;
  for (std::size_t j = 0; j < m && out < k; ++j) {
    if (j + kAhead < m && ids[j + kAhead] >= 0) __builtin_prefetch(boost + ids[j + kAhead], 0, 1);
    const std::int64_t id = ids[j];
    if (id < 0) continue;
    const float cos = scores[j] - boost[id];
    if (prune && !(cos >= cut)) continue;  // NaN fails the comparison: never kept
    out_ids[out] = id;
    out_scores[out] = scores[j];
    out_cos[out] = cos;
    out_tiers[out] = tier_of(cos, theta_);
    ++out;
  }
  return out;
}

double HingeThresholds::hinge_loss(const float* scores, const std::int64_t* labels,
                                   const float* weights, std::size_t n, float* grad) const {
  if (n == 0) return 0.0;  // an empty batch costs nothing (as the training loss)
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t y = labels[i];
    if (y < 0 || y > kNumTypes)
      throw std::invalid_argument("label " + std::to_string(y) + " at row " + std::to_string(i) +
                                  " is not an interaction code 0..4 (0 = negative)");
    const float s = scores[i];
    const float w = weights == nullptr ? 1.f : weights[i];
    if (!std::isfinite(s)) throw std::invalid_argument("score at row " + std::to_string(i) + " is not finite");
    if (!std::isfinite(w)) throw std::invalid_argument("weight at row " + std::to_string(i) + " is not finite");
    // Positives are pushed above their type's threshold, negatives below the negative one.
    const float margin = y > 0 ? theta_[static_cast<std::size_t>(y)] - s : s - theta_[0];
    const float sign = y > 0 ? -1.f : 1.f;
    if (margin > 0.f) {
      total += static_cast<double>(w) * margin;
      grad[i] = static_cast<float>(sign * w * inv_n);
    } else {
      grad[i] = 0.f;
    }
  }
  return total * inv_n;
}

void HingeThresholds::calibrate(const float* scores, const std::int64_t* labels, std::size_t n,
                                std::array<std::int64_t, 5>& kept,
                                std::array<std::array<std::int64_t, 5>, 5>& hits,
                                std::array<std::int64_t, 5>& positives) const {
  kept.fill(0);
  positives.fill(0);
  for (auto& row : hits) row.fill(0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t y = labels[i];
    if (y < 0 || y > kNumTypes)
      throw std::invalid_argument("label " + std::to_string(y) + " at row " + std::to_string(i) +
                                  " is not an interaction code 0..4 (0 = negative)");
    ++positives[static_cast<std::size_t>(y)];
    for (std::size_t c = 0; c < 5; ++c)
      if (scores[i] >= theta_[c]) {
        ++kept[c];
        ++hits[c][static_cast<std::size_t>(y)];
      }
  }
}

}  // namespace upper_fast
