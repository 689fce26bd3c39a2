// Hinge thresholds: one score threshold per interaction type (click, favorite, add_to_cart,
// purchase) plus one for negatives, as in UPPER's multi-part hinge loss. The same numbers prune
// candidates at serving time and grade the survivors into tiers.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace upper_fast {

// Interaction codes: 0 = negative, 1 = click, 2 = favorite, 3 = add_to_cart, 4 = purchase.
constexpr int kNumTypes = 4;

class HingeThresholds {
 public:
  // Throws std::invalid_argument unless all are finite and
  // negative < click <= favorite <= add_to_cart <= purchase.
  HingeThresholds(float click, float favorite, float add_to_cart, float purchase, float negative);

  // theta for code 0 (negative) .. 4 (purchase).
  float threshold(int code) const { return theta_[static_cast<std::size_t>(code)]; }

  // keep[i] = scores[i] >= threshold(min_tier); NaN scores are never kept.
  void prune(const float* scores, std::size_t n, int min_tier, std::uint8_t* keep) const;
  // tier[i] = highest t in 1..4 with scores[i] >= threshold(t), else 0.
  void tier(const float* scores, std::size_t n, std::int8_t* tiers) const;
  // A search's last step over its m hits (best first; a negative id is padding and skipped):
  // cos = scores[i] - boost[ids[i]]; with prune, hits whose cos misses threshold(min_tier) (or is
  // NaN) are dropped; the first k survivors go to out_* with their tiers (as tier()). Returns how
  // many were written. Every non-negative id must index boost (the caller checks). No allocation.
  std::size_t finish_hits(const std::int64_t* ids, const float* scores, std::size_t m, const float* boost,
                          std::size_t k, int min_tier, bool prune, std::int64_t* out_ids, float* out_scores,
                          float* out_cos, std::int8_t* out_tiers) const;
  // Mean over rows of w_i * l_i with l_i = max(0, theta_t - s_i) for a positive of type t and
  // max(0, s_i - theta_neg) for a negative (0 for n = 0); grad = d loss / d s (0 at the kink,
  // like relu).
  // Throws std::invalid_argument on a label outside 0..4 or a non-finite score/weight.
  double hinge_loss(const float* scores, const std::int64_t* labels, const float* weights,
                    std::size_t n, float* grad) const;
  // For cut c in 0..4 (threshold(c)): kept[c] = #{s >= theta_c}; hits[c][t] = #{label t, s >= theta_c};
  // positives[t] = #{label t} (t = 0..4).
  void calibrate(const float* scores, const std::int64_t* labels, std::size_t n,
                 std::array<std::int64_t, 5>& kept, std::array<std::array<std::int64_t, 5>, 5>& hits,
                 std::array<std::int64_t, 5>& positives) const;

 private:
  std::array<float, 5> theta_;  // indexed by interaction code; 0 = negative
};

}  // namespace upper_fast
