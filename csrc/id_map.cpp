#include "id_map.h"

#include "huge_pages.h"

#include "featurizer.h"
#include "parallel.h"

namespace upper_fast {

DuplicateKeyError::DuplicateKeyError(std::size_t first_, std::size_t second_)
    : std::invalid_argument("duplicate key at positions " + std::to_string(first_) + " and " +
                            std::to_string(second_)),
      first(first_),
      second(second_) {}

StringIdMap::StringIdMap(const std::vector<std::string_view>& keys) {
  const std::size_t n = keys.size();
  if (n >= kEmpty) throw std::invalid_argument("StringIdMap holds at most 2^32 - 2 keys");
  std::size_t total = 0;
  for (const auto& k : keys) total += k.size();
  data_.reserve(total);
  offsets_.reserve(n + 1);
  hashes_.reserve(n);
  offsets_.push_back(0);
  for (const auto& k : keys) {
    data_.append(k.data(), k.size());
    offsets_.push_back(data_.size());
    hashes_.push_back(fmix64(fnv1a64(k)));
  }
  // Load factor at most 1/2 keeps linear probes short.
  std::size_t capacity = 16;
  while (capacity < 2 * n) capacity <<= 1;
  slots_.assign(capacity, kEmpty);
  mask_ = capacity - 1;
  for (std::size_t row = 0; row < n; ++row) {
    std::uint64_t pos = hashes_[row] & mask_;
    while (slots_[pos] != kEmpty) {
      const std::uint32_t other = slots_[pos];
      if (hashes_[other] == hashes_[row] && key(other) == key(row)) throw DuplicateKeyError(other, row);
      pos = (pos + 1) & mask_;
    }
    slots_[pos] = static_cast<std::uint32_t>(row);
  }
  // Lookups and keys_at touch these at random (large maps: product and user ids).
  advise_huge_pages(data_.data(), data_.size());
  advise_huge_pages(offsets_.data(), offsets_.size() * sizeof(offsets_[0]));
  advise_huge_pages(hashes_.data(), hashes_.size() * sizeof(hashes_[0]));
  advise_huge_pages(slots_.data(), slots_.size() * sizeof(slots_[0]));
}

std::int64_t StringIdMap::find(std::string_view k) const {
  const std::uint64_t h = fmix64(fnv1a64(k));
  std::uint64_t pos = h & mask_;
  for (;;) {
    const std::uint32_t row = slots_[pos];
    if (row == kEmpty) return -1;
    if (hashes_[row] == h && key(row) == k) return row;
    pos = (pos + 1) & mask_;
  }
}

void StringIdMap::lookup(const std::string_view* queries, std::size_t n, std::int64_t* out,
                         std::size_t num_threads) const {
  parallel_for(n, num_threads, 4096, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t i = begin; i < end; ++i) out[i] = find(queries[i]);
  });
}

}  // namespace upper_fast
