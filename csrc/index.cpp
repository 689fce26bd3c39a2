#include "index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <unordered_set>

#include "common.h"
#include "hnsw_walk.h"
#include "huge_pages.h"
#include "parallel.h"

namespace upper_fast {

using hnswlib::labeltype;
using hnswlib::tableint;
using Hnsw = hnswlib::HierarchicalNSW<float>;
using Candidate = std::pair<float, std::int64_t>;  // (similarity, id)

namespace {

// Best first; ties broken by the smaller id so results are deterministic.
inline bool better(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

// hnswlib keeps one std::mutex per element slot (40 bytes: 8 MB per 200k slots) for concurrent
// inserts; searches never take them. A loaded index is created without them, and an add() of a
// large batch (>= 1/8 of the capacity) releases them when it returns, so a built or loaded index
// does not carry them. Any add() first re-creates them (one zeroed allocation of capacity x 40 bytes,
// ~1 ms per 200k slots); small batches keep them afterwards, so streams of small adds pay it once.
void release_insert_locks(Hnsw& h) { std::vector<std::mutex>().swap(h.link_list_locks_); }

// A "bulk" add: at least 1/8 of the capacity.
bool is_bulk_add(std::size_t n, const Hnsw& h) { return n * 8 >= h.max_elements_; }

// hnswlib's level-0 block (links + stored vectors + labels of every slot) is what a search walks at
// random: back it with 2 MiB pages where the kernel allows (huge_pages.h).
void advise_huge_pages(const Hnsw& h) {
  upper_fast::advise_huge_pages(h.data_level0_memory_, h.max_elements_ * h.size_data_per_element_);
}

class InsertLocks {
 public:
  explicit InsertLocks(Hnsw& h) : h_(h) {
    if (h.link_list_locks_.size() < h.max_elements_) std::vector<std::mutex>(h.max_elements_).swap(h.link_list_locks_);
  }
  ~InsertLocks() {
    if (release_) release_insert_locks(h_);
  }
  InsertLocks(const InsertLocks&) = delete;
  InsertLocks& operator=(const InsertLocks&) = delete;
  void release_on_exit(bool release) { release_ = release; }

 private:
  Hnsw& h_;
  bool release_ = false;
};

}  // namespace

// ---- IdFilter ----

IdFilter IdFilter::allow_list(const std::int64_t* ids, std::size_t n) {
  IdFilter f;
  f.ids_.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    if (ids[i] >= 0) f.ids_.push_back(ids[i]);
  std::sort(f.ids_.begin(), f.ids_.end());
  f.ids_.erase(std::unique(f.ids_.begin(), f.ids_.end()), f.ids_.end());
  f.allowed_count_ = f.ids_.size();
  return f;
}

IdFilter IdFilter::mask(const std::uint8_t* mask, std::size_t n) {
  IdFilter f;
  f.mask_ = mask;
  f.mask_size_ = n;
  for (std::size_t i = 0; i < n; ++i) f.allowed_count_ += mask[i] != 0;
  return f;
}

bool IdFilter::allows(std::int64_t id) const {
  if (id < 0) return false;
  if (mask_ != nullptr) return static_cast<std::size_t>(id) < mask_size_ && mask_[id] != 0;
  return std::binary_search(ids_.begin(), ids_.end(), id);
}

bool IdFilter::operator()(labeltype id) { return allows(static_cast<std::int64_t>(id)); }

// ---- Index ----

Index::Index(std::size_t dim, StorageType dtype, std::size_t M, std::size_t ef_construction, std::uint64_t seed)
    : dim_(dim), dtype_(dtype), M_(M), ef_construction_(ef_construction), seed_(seed) {
  require(M >= 2 && M <= 2048, "M must be in [2, 2048], got " + std::to_string(M));
  require(ef_construction >= 1 && ef_construction <= 1000000,
          "ef_construction must be in [1, 1000000], got " + std::to_string(ef_construction));
  space_ = std::make_unique<InnerProductSpace>(dim, dtype);
  // Capacity 1: hnswlib allocates eagerly; add() grows it to the first batch's size exactly.
  hnsw_ = std::make_unique<Hnsw>(space_.get(), 1, M, ef_construction, static_cast<std::size_t>(seed));
  // The beam width is passed per call to our walk (hnsw_walk.h), so concurrent searches with
  // different ef never write shared state; hnswlib's own ef_ stays 1.
  hnsw_->setEf(1);
}

Index::~Index() = default;

void Index::set_ef(std::size_t ef) {
  require(ef >= 1, "ef must be >= 1");
  ef_.store(ef);
}

void Index::set_rescore_factor(double factor) {
  require(factor >= 1.0 && factor <= 1000.0, "rescore_factor must be in [1, 1000]");
  rescore_permille_.store(static_cast<std::uint32_t>(std::lround(factor * 1000.0)));
}

const char* Index::stored(std::int64_t id) const {
  if (id < 0) return nullptr;
  // Reading hnswlib's label map without its mutex is safe: every writer holds our exclusive lock.
  auto it = hnsw_->label_lookup_.find(static_cast<labeltype>(id));
  if (it == hnsw_->label_lookup_.end() || hnsw_->isMarkedDeleted(it->second)) return nullptr;
  return hnsw_->getDataByInternalId(it->second);
}

void Index::add(const std::int64_t* ids, const float* vectors, std::size_t n, bool replace,
                std::size_t num_threads) {
  if (n == 0) return;
  for (std::size_t i = 0; i < n; ++i) {
    require(ids[i] >= 0, "ids must be non-negative (-1 marks padding in results), got " + std::to_string(ids[i]) +
                             " at position " + std::to_string(i));
  }
  {
    std::vector<std::int64_t> sorted(ids, ids + n);
    std::sort(sorted.begin(), sorted.end());
    auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    require(dup == sorted.end(), "id " + (dup == sorted.end() ? std::string() : std::to_string(*dup)) +
                                     " appears more than once in this batch; ids must be distinct");
  }
  for (std::size_t i = 0; i < n * dim_; ++i) {
    if (!std::isfinite(vectors[i]))
      throw std::invalid_argument("vectors contain NaN or inf (row " + std::to_string(i / dim_) +
                                  "); clean them before adding, e.g. with np.isfinite");
  }

  std::unique_lock lock(mutex_);
  InsertLocks insert_locks(*hnsw_);  // resizeIndex below replaces them at the new capacity
  std::size_t fresh = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = hnsw_->label_lookup_.find(static_cast<labeltype>(ids[i]));
    if (it == hnsw_->label_lookup_.end()) {
      ++fresh;
    } else if (!replace && !hnsw_->isMarkedDeleted(it->second)) {
      throw std::invalid_argument("id " + std::to_string(ids[i]) +
                                  " is already in the index; pass replace=True to update its vector");
    }
  }
  const std::size_t needed = hnsw_->cur_element_count + fresh;
  if (needed > hnsw_->max_elements_) {
    const std::size_t cap = hnsw_->max_elements_;
    hnsw_->resizeIndex(std::max(needed, cap > 1 ? cap + cap / 2 : needed));
  }
  insert_locks.release_on_exit(is_bulk_add(n, *hnsw_));
  const std::size_t threads = std::min(resolve_threads(num_threads), n);
  const std::size_t stride = space_->data_size();
  std::vector<char> buffers(threads * stride);
  // Small batches stay on one thread: thread start-up would cost more than it saves.
  parallel_for(n, threads, 16, [&](std::size_t b, std::size_t e, std::size_t tid) {
    char* buf = buffers.data() + tid * stride;
    for (std::size_t i = b; i < e; ++i) {
      space_->encode(vectors + i * dim_, buf);
      hnsw_->addPoint(buf, static_cast<labeltype>(ids[i]));
    }
  });
  if (is_bulk_add(n, *hnsw_)) advise_huge_pages(*hnsw_);  // bulk adds only
}

void Index::mark_deleted(const std::int64_t* ids, std::size_t n) {
  std::unique_lock lock(mutex_);
  for (std::size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || hnsw_->label_lookup_.count(static_cast<labeltype>(ids[i])) == 0)
      throw std::invalid_argument("id " + std::to_string(ids[i]) + " is not in the index (position " +
                                  std::to_string(i) + "); nothing was deleted");
  }
  for (std::size_t i = 0; i < n; ++i) {
    const tableint internal = hnsw_->label_lookup_.at(static_cast<labeltype>(ids[i]));
    if (!hnsw_->isMarkedDeleted(internal)) hnsw_->markDeletedInternal(internal);
  }
}

bool Index::contains(std::int64_t id) const {
  std::shared_lock lock(mutex_);
  return stored(id) != nullptr;
}

std::size_t Index::size() const {
  std::shared_lock lock(mutex_);
  return hnsw_->cur_element_count - hnsw_->num_deleted_;
}

std::size_t Index::capacity() const {
  std::shared_lock lock(mutex_);
  return hnsw_->max_elements_;
}

std::size_t Index::memory_bytes() const {
  std::shared_lock lock(mutex_);
  const Hnsw& h = *hnsw_;
  const std::size_t cap = h.max_elements_;
  std::size_t upper = 0;
  for (std::size_t i = 0; i < h.cur_element_count; ++i)
    upper += static_cast<std::size_t>(h.element_levels_[i]) * h.size_links_per_element_;
  // Node size of std::unordered_map<labeltype, tableint>: next pointer + key + value, malloc-rounded.
  const std::size_t map_node = 32;
  return cap * h.size_data_per_element_                      // level 0: links, stored vector, label
         + upper                                             // upper-level link lists
         + cap * (sizeof(char*) + sizeof(int))                 // per-slot upper-link pointers, levels
         + h.link_list_locks_.size() * sizeof(std::mutex)        // insert locks: none outside add()
         + cap * sizeof(hnswlib::vl_type)                    // one visited list
         + Hnsw::MAX_LABEL_OPERATION_LOCKS * sizeof(std::mutex)  // hnswlib's fixed label locks
         + h.label_lookup_.bucket_count() * sizeof(void*) + h.label_lookup_.size() * map_node + sizeof(Index);
}

void Index::exact_scan(const float* q, const IdFilter& filter, float* scratch, std::vector<Candidate>& cand) const {
  filter.for_each_allowed([&](std::int64_t id) {
    if (const char* v = stored(id)) cand.emplace_back(space_->score(q, v, scratch), id);
  });
}

void Index::search_one(const float* q, std::size_t k, std::size_t want, IdFilter* filter, void* enc, float* scratch,
                       std::vector<Candidate>& cand, WalkScratch& walk, std::int64_t* ids, float* scores,
                       std::int64_t* count) const {
  cand.clear();
  const bool quantised = dtype_ != StorageType::f32;
  if (filter != nullptr && filter->allowed_count() <= kExactScanMax) {
    exact_scan(q, *filter, scratch, cand);
  } else {
    const void* query = q;
    if (quantised) {
      space_->encode(q, enc);
      query = enc;
    }
    hnsw_walk(*hnsw_, query, want, filter, walk);
    for (const auto& [distance, internal] : walk.top) {
      const auto id = static_cast<std::int64_t>(hnsw_->getExternalLabel(internal));
      if (quantised) {
        // Rescore with the full-precision query against the stored vector.
        cand.emplace_back(space_->score(q, hnsw_->getDataByInternalId(internal), scratch), id);
      } else {
        cand.emplace_back(-distance, id);
      }
    }
  }
  const std::size_t found = std::min(k, cand.size());
  std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(found), cand.end(), better);
  for (std::size_t j = 0; j < found; ++j) {
    ids[j] = cand[j].second;
    scores[j] = cand[j].first;
  }
  for (std::size_t j = found; j < k; ++j) {
    ids[j] = -1;
    scores[j] = -std::numeric_limits<float>::infinity();
  }
  *count = static_cast<std::int64_t>(found);
}

void Index::search(const float* queries, std::size_t m, std::size_t k, std::size_t ef, IdFilter* filter,
                   std::size_t num_threads, std::int64_t* out_ids, float* out_scores,
                   std::int64_t* out_counts) const {
  require(k >= 1, "k must be >= 1");
  if (ef == 0) ef = ef_.load();
  // Beam width = candidates kept.
  std::size_t want = std::max(ef, k);
  if (dtype_ != StorageType::f32) {
    const auto rescored = static_cast<std::size_t>(
        std::ceil(static_cast<double>(k) * static_cast<double>(rescore_permille_.load()) / 1000.0));
    want = std::max(want, rescored);
  }
  std::shared_lock lock(mutex_);
  const std::size_t threads = std::min(resolve_threads(num_threads), std::max<std::size_t>(m, 1));
  // Per-thread scratch, allocated once per call, never inside the query loop.
  struct Scratch {
    std::vector<char> enc;
    std::vector<float> f32;
    std::vector<Candidate> cand;
    WalkScratch walk;
  };
  std::vector<Scratch> scratch(threads);
  for (auto& s : scratch) {
    s.enc.resize(space_->data_size());
    s.f32.resize(dim_);
    s.cand.reserve(filter != nullptr ? std::max(want, kExactScanMax) : want);
    s.walk.top.reserve(want + 1);
    s.walk.cand.reserve(4 * want + hnsw_->maxM0_);
  }
  parallel_for(m, threads, 4, [&](std::size_t b, std::size_t e, std::size_t tid) {
    Scratch& s = scratch[tid];
    for (std::size_t i = b; i < e; ++i)
      search_one(queries + i * dim_, k, want, filter, s.enc.data(), s.f32.data(), s.cand, s.walk, out_ids + i * k,
                 out_scores + i * k, out_counts + i);
  });
}

// ---- persistence ----

namespace {

template <class T>
T read_pod(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

[[noreturn]] void damaged(const std::string& path, const std::string& what) {
  throw FormatError("'" + path + "' is damaged: " + what);
}

// hnswlib's loadIndex trusts its input; check every size, count and link it will follow, so that a
// file with a valid checksum but inconsistent content still fails cleanly.
void validate_hnsw_payload(const unsigned char* p, std::size_t n, const index_io::IndexHeader& h,
                           std::size_t data_size, const std::string& path) {
  constexpr std::size_t kFixed = 96;  // the scalar fields hnswlib writes first
  if (n < kFixed) damaged(path, "graph header truncated");
  const auto offset_level0 = read_pod<std::size_t>(p + 0);
  const auto max_elements = read_pod<std::size_t>(p + 8);
  const auto count = read_pod<std::size_t>(p + 16);
  const auto size_data_per_element = read_pod<std::size_t>(p + 24);
  const auto label_offset = read_pod<std::size_t>(p + 32);
  const auto offset_data = read_pod<std::size_t>(p + 40);
  const auto maxlevel = read_pod<int>(p + 48);
  const auto enterpoint = read_pod<tableint>(p + 52);
  const auto maxM = read_pod<std::size_t>(p + 56);
  const auto maxM0 = read_pod<std::size_t>(p + 64);
  const auto M = read_pod<std::size_t>(p + 72);
  const auto mult = read_pod<double>(p + 80);
  const auto efc = read_pod<std::size_t>(p + 88);

  const std::size_t links0 = 2 * static_cast<std::size_t>(h.M) * sizeof(tableint) + sizeof(tableint);
  const std::size_t links_upper = h.M * sizeof(tableint) + sizeof(tableint);
  if (offset_level0 != 0 || M != h.M || maxM != h.M || maxM0 != 2 * static_cast<std::size_t>(h.M) ||
      offset_data != links0 || label_offset != links0 + data_size ||
      size_data_per_element != links0 + data_size + sizeof(labeltype) ||
      efc != std::max<std::size_t>(h.ef_construction, h.M))
    damaged(path, "graph parameters do not match the header");
  if (count != h.count || max_elements < count || count > std::numeric_limits<tableint>::max() / 2)
    damaged(path, "element count does not match the header");
  if (!(std::fabs(mult - 1.0 / std::log(static_cast<double>(h.M))) < 1e-9)) damaged(path, "level multiplier");
  if ((n - kFixed) / size_data_per_element < count) damaged(path, "level-0 block truncated");

  const unsigned char* level0 = p + kFixed;
  std::size_t deleted = 0;
  std::vector<labeltype> labels(count);
  for (std::size_t i = 0; i < count; ++i) {
    const unsigned char* e = level0 + i * size_data_per_element;
    const auto links = read_pod<std::uint16_t>(e);
    const unsigned char flags = e[2];
    if (links > maxM0 || (flags & ~Hnsw::DELETE_MARK) != 0 || e[3] != 0) damaged(path, "level-0 link header");
    for (std::size_t j = 0; j < links; ++j)
      if (read_pod<tableint>(e + 4 + 4 * j) >= count) damaged(path, "level-0 link out of range");
    deleted += flags & Hnsw::DELETE_MARK;
    labels[i] = read_pod<labeltype>(e + label_offset);
    if (labels[i] > static_cast<labeltype>(std::numeric_limits<std::int64_t>::max())) damaged(path, "label");
  }
  if (count - deleted != h.live) damaged(path, "live count does not match the header");
  std::sort(labels.begin(), labels.end());
  if (std::adjacent_find(labels.begin(), labels.end()) != labels.end()) damaged(path, "duplicate ids");

  // Upper levels: one pass for the levels, one for the links (a link at level l must point to a
  // node that has level l).
  std::vector<int> levels(count);
  std::vector<std::size_t> starts(count);
  std::size_t pos = kFixed + count * size_data_per_element;
  int top = -1;
  for (std::size_t i = 0; i < count; ++i) {
    if (n - pos < sizeof(std::uint32_t)) damaged(path, "link lists truncated");
    const auto bytes = read_pod<std::uint32_t>(p + pos);
    pos += sizeof(std::uint32_t);
    if (bytes % links_upper != 0 || bytes / links_upper > 64) damaged(path, "link list size");
    if (n - pos < bytes) damaged(path, "link lists truncated");
    levels[i] = static_cast<int>(bytes / links_upper);
    starts[i] = pos;
    top = std::max(top, levels[i]);
    pos += bytes;
  }
  if (pos != n) damaged(path, "trailing bytes after the graph");
  for (std::size_t i = 0; i < count; ++i) {
    for (int l = 0; l < levels[i]; ++l) {
      const unsigned char* list = p + starts[i] + static_cast<std::size_t>(l) * links_upper;
      const auto links = read_pod<std::uint16_t>(list);
      if (links > maxM || list[2] != 0 || list[3] != 0) damaged(path, "upper link header");
      for (std::size_t j = 0; j < links; ++j) {
        const auto to = read_pod<tableint>(list + 4 + 4 * j);
        if (to >= count || levels[to] < l + 1) damaged(path, "upper link out of range");
      }
    }
  }
  if (count == 0 ? maxlevel != -1 : (maxlevel != top || enterpoint >= count || levels[enterpoint] != top))
    damaged(path, "entry point");
}

}  // namespace

Index::Index(const index_io::IndexHeader& h, const std::string& hnsw_path)
    : dim_(h.dim),
      dtype_(static_cast<StorageType>(h.dtype)),
      M_(h.M),
      ef_construction_(h.ef_construction),
      seed_(h.seed),
      ef_(h.ef),
      rescore_permille_(h.rescore_permille) {
  space_ = std::make_unique<InnerProductSpace>(dim_, dtype_);
  hnsw_ = std::make_unique<Hnsw>(space_.get(), hnsw_path, false, std::max<std::size_t>(h.count, 1), false);
  hnsw_->setEf(1);
  release_insert_locks(*hnsw_);
  advise_huge_pages(*hnsw_);
}

void Index::save(const std::string& path) const {
  std::shared_lock lock(mutex_);
  index_io::ScratchFile scratch;
  hnsw_->saveIndex(scratch.path());
  index_io::MappedFile payload(scratch.fd(), scratch.path());
  // saveIndex reports no write errors: check that everything arrived.
  if (payload.size() != hnsw_->indexFileSize())
    throw index_io::IoError(EIO, "could not serialise the index graph (scratch file incomplete)", path);
  index_io::IndexHeader h;
  h.dtype = static_cast<std::uint32_t>(dtype_);
  h.dim = static_cast<std::uint32_t>(dim_);
  h.M = static_cast<std::uint32_t>(M_);
  h.ef_construction = static_cast<std::uint32_t>(ef_construction_);
  h.ef = static_cast<std::uint32_t>(std::min<std::size_t>(ef_.load(), std::numeric_limits<std::uint32_t>::max()));
  h.rescore_permille = rescore_permille_.load();
  h.seed = seed_;
  h.count = hnsw_->cur_element_count;
  h.live = hnsw_->cur_element_count - hnsw_->num_deleted_;
  h.payload_size = payload.size();
  h.payload_checksum = index_io::xxh64(payload.data(), payload.size());
  unsigned char head[index_io::kHeaderSize];
  index_io::encode_header(h, head);
  index_io::write_atomically(path, head, sizeof head, payload.data(), payload.size());
}

index_io::IndexHeader Index::read_header(const std::string& path) { return index_io::read_header_file(path); }

std::unique_ptr<Index> Index::load(const std::string& path) {
  index_io::ScratchFile scratch;
  index_io::IndexHeader h;
  {
    index_io::MappedFile file(path);
    h = index_io::decode_header(file.data(), file.size(), path);
    const std::size_t body = file.size() - index_io::kHeaderSize;
    if (body < h.payload_size) throw FormatError("'" + path + "' is truncated");
    if (body > h.payload_size) throw FormatError("'" + path + "' has trailing bytes after the index");
    const unsigned char* payload = file.data() + index_io::kHeaderSize;
    if (index_io::xxh64(payload, body) != h.payload_checksum)
      throw FormatError("'" + path + "' is damaged (payload checksum mismatch)");
    if (h.ef == 0 || h.ef_construction == 0 || h.rescore_permille < 1000 || h.M > 2048 || h.dim >= (1u << 17)) throw FormatError("'" + path + "' has a damaged header");
    const InnerProductSpace space(h.dim, static_cast<StorageType>(h.dtype));
    validate_hnsw_payload(payload, body, h, space.data_size(), path);
    scratch.write_all(payload, body);
  }
  return std::unique_ptr<Index>(new Index(h, scratch.path()));
}

}  // namespace upper_fast
