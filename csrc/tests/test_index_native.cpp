// Native tests of the index (no Python): run under the sanitizers by scripts/sanitize.sh.
// Exit status 0 = all passed; failures are printed and counted.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common.h"
#include "hnsw_walk.h"
#include "index.h"
#include "index_io.h"

using namespace upper_fast;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

std::vector<float> unit_vectors(std::size_t n, std::size_t dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(n * dim);
  for (std::size_t i = 0; i < n; ++i) {
    float norm = 0.f;
    for (std::size_t j = 0; j < dim; ++j) norm += (x[i * dim + j] = g(rng)) * x[i * dim + j];
    for (std::size_t j = 0; j < dim; ++j) x[i * dim + j] /= std::sqrt(norm);
  }
  return x;
}

// Fraction of the exact top-k found.
double recall(const std::vector<float>& x, std::size_t n, std::size_t dim, const float* q, std::size_t m,
              std::size_t k, const std::vector<std::int64_t>& ids) {
  double hits = 0;
  std::vector<std::pair<float, std::int64_t>> s(n);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      float d = 0.f;
      for (std::size_t t = 0; t < dim; ++t) d += q[i * dim + t] * x[j * dim + t];
      s[j] = {-d, static_cast<std::int64_t>(j)};
    }
    std::partial_sort(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(k), s.end());
    std::set<std::int64_t> truth;
    for (std::size_t j = 0; j < k; ++j) truth.insert(s[j].second);
    for (std::size_t j = 0; j < k; ++j) hits += truth.count(ids[i * k + j]);
  }
  return hits / static_cast<double>(m * k);
}

void test_xxh64() {
  check(index_io::xxh64("", 0) == 0xEF46DB3751D8E999ULL, "xxh64 of empty input");
  const char* s = "Nobody inspects the spammish repetition";
  check(index_io::xxh64(s, std::strlen(s)) == 0xFBCEA83C8A378BF1ULL, "xxh64 of a 39-byte input");
}

void test_index(StorageType type, const char* name) {
  const std::size_t n = 2000, dim = 24, m = 50, k = 10;
  const auto x = unit_vectors(n, dim, 1);
  std::vector<std::int64_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::int64_t>(i);
  Index index(dim, type, 12, 100, 0);
  index.add(ids.data(), x.data(), n, false, 2);
  check(index.size() == n, "size after add");
  std::vector<std::int64_t> out(m * k), counts(m);
  std::vector<float> scores(m * k);
  index.search(x.data(), m, k, 100, nullptr, 2, out.data(), scores.data(), counts.data());
  const double r = recall(x, n, dim, x.data(), m, k, out);
  std::fprintf(stderr, "%s recall@10 = %.4f\n", name, r);
  check(r >= 0.95, "recall@10 >= 0.95");

  // Deletion and filters.
  const std::int64_t gone = out[0];
  index.mark_deleted(&gone, 1);
  check(!index.contains(gone) && index.size() == n - 1, "mark_deleted");
  std::vector<std::int64_t> allowed = {gone};
  for (std::int64_t id : {5, 7, 9, 11})
    if (id != gone && allowed.size() < 4) allowed.push_back(id);
  IdFilter f = IdFilter::allow_list(allowed.data(), allowed.size());
  index.search(x.data(), 1, k, 50, &f, 1, out.data(), scores.data(), counts.data());
  check(counts[0] == 3 && out[3] == -1 && std::isinf(scores[3]), "allow-list with padding");

  // Errors leave the index unchanged.
  bool threw = false;
  const std::int64_t live = gone == 0 ? 1 : 0;
  try {
    index.add(&live, x.data(), 1, false, 1);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw && index.size() == n - 1, "duplicate id rejected");

  // Round trip, then a damaged copy.
  char dir[] = "/tmp/upper_fast_native_XXXXXX";
  check(::mkdtemp(dir) != nullptr, "mkdtemp");
  const std::string path = std::string(dir) + "/i.upf";
  index.save(path);
  auto loaded = Index::load(path);
  std::vector<std::int64_t> out2(m * k);
  index.search(x.data(), m, k, 100, nullptr, 1, out.data(), scores.data(), counts.data());
  loaded->search(x.data(), m, k, 100, nullptr, 1, out2.data(), scores.data(), counts.data());
  check(out == out2, "round trip gives the same results");
  std::string blob;
  {
    std::ifstream in(path, std::ios::binary);
    blob.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (std::size_t pos : {std::size_t{3}, std::size_t{100}, blob.size() / 2, blob.size() - 1}) {
    std::string bad = blob;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bad;
    bool format_error = false;
    try {
      Index::load(path);
    } catch (const FormatError&) {
      format_error = true;
    }
    check(format_error, "bit flip -> FormatError");
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << blob.substr(0, blob.size() / 3);
  bool format_error = false;
  try {
    Index::load(path);
  } catch (const FormatError&) {
    format_error = true;
  }
  check(format_error, "truncation -> FormatError");
  ::unlink(path.c_str());
  ::rmdir(dir);
}

// Our walk (hnsw_walk.cpp) against hnswlib's own searchKnn on the same graph: the same algorithm, so
// the same result set, with no deletions, with deletions, and with a filter.
class EvenLabels final : public hnswlib::BaseFilterFunctor {
 public:
  bool operator()(hnswlib::labeltype id) override { return id % 2 == 0; }
};

void test_walk_matches_hnswlib(StorageType type, const char* name) {
  const std::size_t n = 3000, dim = 24, m = 40;
  auto x = unit_vectors(n, dim, 11);
  auto q = unit_vectors(m, dim, 12);
  InnerProductSpace space(dim, type);
  hnswlib::HierarchicalNSW<float> g(&space, n, 12, 100, 3);
  std::vector<char> enc(space.data_size());
  for (std::size_t i = 0; i < n; ++i) {
    space.encode(&x[i * dim], enc.data());
    g.addPoint(enc.data(), i);
  }
  WalkScratch walk;
  EvenLabels even;
  for (int round = 0; round < 3; ++round) {
    if (round == 1)
      for (std::size_t i = 0; i < n; i += 7) g.markDelete(i);
    hnswlib::BaseFilterFunctor* filter = round == 2 ? &even : nullptr;
    bool same = true, returnable = true;
    for (std::size_t i = 0; i < m; ++i) {
      space.encode(&q[i * dim], enc.data());
      for (std::size_t ef : {1u, 10u, 64u}) {
        g.setEf(1);
        auto heap = g.searchKnn(enc.data(), ef, filter);
        std::set<std::size_t> theirs;
        for (; !heap.empty(); heap.pop()) theirs.insert(heap.top().second);
        hnsw_walk(g, enc.data(), ef, filter, walk);
        std::set<std::size_t> ours;
        for (const auto& e : walk.top) {
          const auto label = g.getExternalLabel(e.second);
          ours.insert(label);
          returnable = returnable && !g.isMarkedDeleted(e.second) && (filter == nullptr || label % 2 == 0);
        }
        same = same && ours == theirs && walk.top.size() <= ef;
      }
    }
    std::string what = std::string(name) + ": hnsw_walk returns hnswlib's result set (round " + std::to_string(round) + ")";
    check(same, what.c_str());
    what = std::string(name) + ": hnsw_walk never returns deleted or filtered nodes";
    check(returnable, what.c_str());
  }
  WalkScratch empty_walk;
  hnswlib::HierarchicalNSW<float> empty(&space, 10, 12, 100, 3);
  hnsw_walk(empty, enc.data(), 10, nullptr, empty_walk);
  check(empty_walk.top.empty(), "hnsw_walk on an empty graph returns nothing");
}

}  // namespace

int main() {
  test_xxh64();
  test_index(StorageType::f32, "f32");
  test_index(StorageType::bf16, "bf16");
  test_index(StorageType::i8, "i8");
  test_walk_matches_hnswlib(StorageType::f32, "f32");
  test_walk_matches_hnswlib(StorageType::i8, "i8");
  if (failures) std::fprintf(stderr, "%d check(s) failed\n", failures);
  else std::fprintf(stderr, "all index checks passed\n");
  return failures == 0 ? 0 : 1;
}
