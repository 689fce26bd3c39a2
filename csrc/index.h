// Index: an HNSW graph (hnswlib::HierarchicalNSW<float>) over our inner-product space, with
// f32, bf16 or i8 storage, id filters, deletions, and a checked file format (index_io.h).
//
// Search semantics: the graph is searched with beam width ef in the stored (possibly quantised)
// space; for bf16 and i8 the beam's max(ef, ceil(rescore_factor * k)) candidates are all rescored
// with the full-precision query against the stored vectors (f32 x bf16, or f32 x dequantised i8),
// and the best k are returned.
// No full-precision copy of the data is kept. Scores are similarities (higher is better).
//
// Thread safety: search is safe from any number of threads at once; add, mark_deleted and
// set_ef take an exclusive lock (searches wait for them).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "hnsw_walk.h"
#include "index_io.h"
#include "ip_space.h"

namespace upper_fast {

// Which ids a search may return: an allow-list of ids or a boolean mask indexed by id.
// Evaluated inside the search walk (no callbacks into Python). Read-only, so shareable by threads.
class IdFilter final : public hnswlib::BaseFilterFunctor {
 public:
  // Copies and sorts the ids (negative ids can never match and are ignored).
  static IdFilter allow_list(const std::int64_t* ids, std::size_t n);
  // Borrows mask[0, n): id i is allowed iff i < n and mask[i] != 0. The caller keeps it alive.
  static IdFilter mask(const std::uint8_t* mask, std::size_t n);

  bool operator()(hnswlib::labeltype id) override;
  bool allows(std::int64_t id) const;
  std::size_t allowed_count() const { return allowed_count_; }
  // Calls fn(id) for every allowed id, ascending.
  template <class Fn>
  void for_each_allowed(Fn&& fn) const {
    if (mask_ == nullptr) {
      for (std::int64_t id : ids_) fn(id);
    } else {
      for (std::size_t i = 0; i < mask_size_; ++i)
        if (mask_[i]) fn(static_cast<std::int64_t>(i));
    }
  }

 private:
  IdFilter() = default;
  std::vector<std::int64_t> ids_;  // sorted, unique, non-negative (allow-list form)
  const std::uint8_t* mask_ = nullptr;
  std::size_t mask_size_ = 0;
  std::size_t allowed_count_ = 0;
};

class Index {
 public:
  // Filters that allow at most this many ids are answered by an exact scan of those ids: cheaper
  // than a graph walk that must skip almost every node, and exact.
  static constexpr std::size_t kExactScanMax = 2048;

  Index(std::size_t dim, StorageType dtype, std::size_t M, std::size_t ef_construction, std::uint64_t seed);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // Adds n vectors (n x dim floats, finite) under ids (non-negative, distinct within the batch).
  // An id already live in the index is an error unless `replace` (then its vector is updated); an id
  // that was marked deleted is revived with the new vector. Validates the whole batch before
  // changing anything. Capacity grows as needed.
  void add(const std::int64_t* ids, const float* vectors, std::size_t n, bool replace, std::size_t num_threads);

  // m queries (m x dim floats); out_ids/out_scores are m x k, out_counts m. ef = 0: use ef().
  void search(const float* queries, std::size_t m, std::size_t k, std::size_t ef, IdFilter* filter,
              std::size_t num_threads, std::int64_t* out_ids, float* out_scores, std::int64_t* out_counts) const;

  // Marks ids deleted (they stop appearing in results). An id never added is an error (nothing is
  // changed); deleting an already deleted id is a no-op.
  void mark_deleted(const std::int64_t* ids, std::size_t n);

  bool contains(std::int64_t id) const;  // live ids only
  std::size_t size() const;              // live ids
  std::size_t capacity() const;
  std::size_t memory_bytes() const;
  std::size_t dim() const { return dim_; }
  StorageType dtype() const { return dtype_; }
  std::size_t M() const { return M_; }
  std::size_t ef_construction() const { return ef_construction_; }
  std::uint64_t seed() const { return seed_; }
  std::size_t ef() const { return ef_.load(); }
  void set_ef(std::size_t ef);
  // Quantised storage: candidates kept for rescoring, as a multiple of k (>= 1; default 1).
  double rescore_factor() const { return rescore_permille_.load() / 1000.0; }
  void set_rescore_factor(double factor);

  void save(const std::string& path) const;
  static std::unique_ptr<Index> load(const std::string& path);
  static index_io::IndexHeader read_header(const std::string& path);

 private:
  Index(const index_io::IndexHeader& header, const std::string& hnsw_path);

  void search_one(const float* q, std::size_t k, std::size_t want, IdFilter* filter, void* enc, float* scratch,
                  std::vector<std::pair<float, std::int64_t>>& cand, WalkScratch& walk, std::int64_t* ids,
                  float* scores, std::int64_t* count) const;
  void exact_scan(const float* q, const IdFilter& filter, float* scratch,
                  std::vector<std::pair<float, std::int64_t>>& cand) const;
  const char* stored(std::int64_t id) const;  // nullptr if absent or deleted; needs the lock held

  std::size_t dim_;
  StorageType dtype_;
  std::size_t M_;
  std::size_t ef_construction_;
  std::uint64_t seed_;
  std::atomic<std::size_t> ef_{64};
  std::atomic<std::uint32_t> rescore_permille_{1000};
  std::unique_ptr<InnerProductSpace> space_;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw_;
  mutable std::shared_mutex mutex_;
};

}  // namespace upper_fast
