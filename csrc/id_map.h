// StringIdMap: an immutable string -> row map (open addressing over one contiguous key buffer),
// used for query -> graph node, product_id -> row and user_id -> row lookups.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace upper_fast {

// Two equal keys; first and second are their positions in the input.
class DuplicateKeyError : public std::invalid_argument {
 public:
  DuplicateKeyError(std::size_t first, std::size_t second);
  std::size_t first, second;
};

class StringIdMap {
 public:
  // Row i is keys[i]. Throws DuplicateKeyError, or std::invalid_argument beyond 2^32 - 2 keys.
  explicit StringIdMap(const std::vector<std::string_view>& keys);

  // The row of key, -1 if absent.
  std::int64_t find(std::string_view key) const;
  // out[i] = find(queries[i]) over num_threads threads (0 = all cores).
  void lookup(const std::string_view* queries, std::size_t n, std::int64_t* out, std::size_t num_threads) const;

  std::size_t size() const { return hashes_.size(); }
  std::string_view key(std::size_t row) const {
    return std::string_view(data_.data() + offsets_[row], offsets_[row + 1] - offsets_[row]);
  }
  // Cache hints for gathering many random rows' keys (keys_at): first the offsets, then the bytes,
  // so the misses of a batch overlap instead of running one after another.
  void prefetch_offsets(std::size_t row) const { __builtin_prefetch(offsets_.data() + row, 0, 1); }
  void prefetch_key(std::size_t row) const { __builtin_prefetch(data_.data() + offsets_[row], 0, 1); }

 private:
  static constexpr std::uint32_t kEmpty = 0xFFFFFFFFu;
  std::string data_;                  // all keys back to back
  std::vector<std::uint64_t> offsets_;  // size() + 1 offsets into data_
  std::vector<std::uint64_t> hashes_;   // hash of each key
  std::vector<std::uint32_t> slots_;    // power-of-two table of rows, kEmpty where free
  std::uint64_t mask_ = 0;
};

}  // namespace upper_fast
