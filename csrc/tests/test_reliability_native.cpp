// Reliability checks of the native core, run under ASan+UBSan by scripts/sanitize.sh:
// every SIMD level the CPU has against the scalar oracle at odd sizes and unaligned pointers,
// special values (NaN, inf, subnormal, int8 extremes), bf16 conversion; batched top-k and
// hydration at odd sizes on exact-size buffers; the featurizer on random and truncated UTF-8 that
// is not NUL-terminated; the index at odd dims in every storage type, and loads of its file
// truncated at every offset and bit-flipped at every byte. Exits nonzero on failure.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <unistd.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "common.h"
#include "featurizer.h"
#include "hydration.h"
#include "index.h"
#include "simd/dispatch.h"
#include "topk.h"
#include "tests/check.h"

namespace {

using upper_fast::simd::Kernels;
using upper_fast::simd::Level;

std::vector<const Kernels*> available_levels() {
  std::vector<const Kernels*> out;
  for (Level l : {Level::scalar, Level::avx2, Level::avx512}) {
    if (static_cast<int>(l) <= static_cast<int>(upper_fast::simd::cpu_max_level()))
      out.push_back(&upper_fast::simd::for_level(l));
  }
  return out;
}

bool approx_equal(float got, float want, std::size_t n) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  float tol = 1e-5f * static_cast<float>(n + 1) * std::max(1.f, std::fabs(want));
  return std::fabs(got - want) <= tol;
}

void test_dot_kernels_odd_sizes() {
  const Kernels& ref = upper_fast::simd::scalar_kernels();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uf(-1.f, 1.f);
  std::uniform_int_distribution<int> ui(-128, 127);
  for (const Kernels* k : available_levels()) {
    for (std::size_t n = 0; n <= 131; ++n) {
      for (std::size_t shift : {0u, 1u, 3u}) {
        // Allocate exactly shift+n so the last element is the last byte of the allocation.
        std::vector<float> fa(n + shift), fb(n + shift);
        std::vector<std::uint16_t> ha(n + shift), hb(n + shift);
        std::vector<std::int8_t> ia(n + shift), ib(n + shift);
        for (std::size_t i = 0; i < n + shift; ++i) {
          fa[i] = uf(rng);
          fb[i] = uf(rng);
          ha[i] = upper_fast::simd::float_to_bf16(uf(rng));
          hb[i] = upper_fast::simd::float_to_bf16(uf(rng));
          ia[i] = static_cast<std::int8_t>(ui(rng));
          ib[i] = static_cast<std::int8_t>(ui(rng));
        }
        const float* a = fa.data() + shift;
        const float* b = fb.data() + shift;
        const std::uint16_t* x = ha.data() + shift;
        const std::uint16_t* y = hb.data() + shift;
        const std::int8_t* p = ia.data() + shift;
        const std::int8_t* q = ib.data() + shift;
        float want = ref.dot_f32(a, b, n), got = k->dot_f32(a, b, n);
        CHECK(approx_equal(got, want, n), "%s dot_f32 n=%zu shift=%zu got %g want %g", k->name, n, shift, got, want);
        want = ref.dot_f32_bf16(a, y, n);
        got = k->dot_f32_bf16(a, y, n);
        CHECK(approx_equal(got, want, n), "%s dot_f32_bf16 n=%zu got %g want %g", k->name, n, got, want);
        want = ref.dot_bf16(x, y, n);
        got = k->dot_bf16(x, y, n);
        CHECK(approx_equal(got, want, n), "%s dot_bf16 n=%zu got %g want %g", k->name, n, got, want);
        std::int32_t iw = ref.dot_i8(p, q, n), ig = k->dot_i8(p, q, n);
        CHECK(iw == ig, "%s dot_i8 n=%zu got %d want %d", k->name, n, ig, iw);
      }
    }
  }
}

void test_dot_special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float sub = std::numeric_limits<float>::denorm_min();
  for (const Kernels* k : available_levels()) {
    for (std::size_t n : {1u, 7u, 8u, 9u, 16u, 17u, 33u, 65u}) {
      std::vector<float> a(n, 1.f), b(n, 1.f);
      a[n - 1] = nan;
      CHECK(std::isnan(k->dot_f32(a.data(), b.data(), n)), "%s NaN must propagate n=%zu", k->name, n);
      a[n - 1] = inf;
      float r = k->dot_f32(a.data(), b.data(), n);
      CHECK(std::isinf(r) && r > 0, "%s +inf must propagate n=%zu got %g", k->name, n, r);
      std::fill(a.begin(), a.end(), sub);
      r = k->dot_f32(a.data(), b.data(), n);
      CHECK(std::isfinite(r) && r >= 0.f, "%s subnormals n=%zu got %g", k->name, n, r);
    }
    // int8 extremes: (-128)*(-128) summed is exact in int32 for n < 2^17.
    const std::size_t n = (1u << 17) - 1;
    std::vector<std::int8_t> a(n, -128), b(n, -128);
    std::int32_t want = static_cast<std::int32_t>(n) * 16384;
    CHECK(k->dot_i8(a.data(), b.data(), n) == want, "%s dot_i8 extremes", k->name);
    std::fill(b.begin(), b.end(), 127);
    CHECK(k->dot_i8(a.data(), b.data(), n) == -static_cast<std::int32_t>(n) * 16256, "%s dot_i8 mixed extremes",
          k->name);
  }
}

void test_bf16_conversion() {
  using upper_fast::simd::bf16_to_float;
  using upper_fast::simd::float_to_bf16;
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))), "NaN");
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::signaling_NaN()))), "sNaN");
  CHECK(bf16_to_float(float_to_bf16(inf)) == inf, "+inf");
  CHECK(bf16_to_float(float_to_bf16(-inf)) == -inf, "-inf");
  CHECK(bf16_to_float(float_to_bf16(0.f)) == 0.f, "zero");
  CHECK(bf16_to_float(float_to_bf16(1.f)) == 1.f, "one");
  // Largest finite float rounds up to +inf in bf16 (round to nearest even), never to NaN.
  CHECK(!std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::max()))), "max");
  // Every bf16 bit pattern survives a round trip through float (NaNs stay NaN).
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    float f = bf16_to_float(static_cast<std::uint16_t>(h));
    std::uint16_t back = float_to_bf16(f);
    if (std::isnan(f))
      CHECK(std::isnan(bf16_to_float(back)), "NaN pattern %04x", h);
    else
      CHECK(back == h, "pattern %04x -> %04x", h, back);
  }
}

void test_for_level_rejects_unsupported() {
  if (upper_fast::simd::cpu_max_level() == Level::avx512) return;
  bool threw = false;
  try {
    upper_fast::simd::for_level(Level::avx512);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "for_level(avx512) on a CPU without it must throw std::invalid_argument");
}

void test_topk_odd_sizes() {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uf(-1.f, 1.f);
  for (std::size_t d : {1u, 3u, 8u, 17u}) {
    for (std::size_t n : {0u, 1u, 5u, 33u, 130u}) {
      for (std::size_t m : {1u, 3u}) {
        for (std::size_t k : {1u, 4u, 200u}) {
          std::vector<float> q(m * d), c(n * d);
          for (auto& x : q) x = uf(rng);
          for (auto& x : c) x = uf(rng);
          // Exclude candidate row 0 for every query (when there is one).
          std::vector<std::int64_t> indptr(m + 1), indices;
          for (std::size_t i = 0; i < m; ++i) {
            if (n > 0) indices.push_back(0);
            indptr[i + 1] = static_cast<std::int64_t>(indices.size());
          }
          std::vector<std::int64_t> ids(m * k), counts(m);
          std::vector<float> scores(m * k);
          upper_fast::Exclusions ex{indptr.data(), indices.empty() ? nullptr : indices.data()};
          if (indices.empty()) ex = upper_fast::Exclusions{};
          upper_fast::topk_inner_product({q.data(), upper_fast::ElemType::f32, m, d},
                                         {c.data(), upper_fast::ElemType::f32, n, d}, k, ex, 3, ids.data(),
                                         scores.data(), counts.data());
          for (std::size_t i = 0; i < m; ++i) {
            std::vector<std::pair<float, std::int64_t>> all;
            for (std::size_t j = (n > 0 ? 1 : 0); j < n; ++j) {
              float sc = upper_fast::simd::scalar_kernels().dot_f32(&q[i * d], &c[j * d], d);
              all.emplace_back(sc, static_cast<std::int64_t>(j));
            }
            std::size_t want = std::min(k, all.size());
            CHECK(static_cast<std::size_t>(counts[i]) == want, "topk count d=%zu n=%zu k=%zu: %lld vs %zu", d, n, k,
                  static_cast<long long>(counts[i]), want);
            std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first; });
            for (std::size_t r = 0; r < want; ++r)
              CHECK(std::fabs(scores[i * k + r] - all[r].first) <= 1e-4f, "topk score d=%zu n=%zu r=%zu", d, n, r);
            for (std::size_t r = want; r < k; ++r)
              CHECK(ids[i * k + r] == -1 && std::isinf(scores[i * k + r]), "topk padding");
          }
        }
      }
    }
  }
  // Out-of-range exclusion and NaN input: std::invalid_argument, never a crash.
  std::vector<float> q(4, 1.f), c(8, 1.f);
  std::vector<std::int64_t> indptr{0, 1}, bad{7}, ids(2), counts(1);
  std::vector<float> scores(2);
  bool threw = false;
  try {
    upper_fast::topk_inner_product({q.data(), upper_fast::ElemType::f32, 1, 4}, {c.data(), upper_fast::ElemType::f32, 2, 4},
                                   2, {indptr.data(), bad.data()}, 1, ids.data(), scores.data(), counts.data());
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "topk exclusion out of range must throw");
  q[2] = std::numeric_limits<float>::quiet_NaN();
  threw = false;
  try {
    upper_fast::topk_inner_product({q.data(), upper_fast::ElemType::f32, 1, 4}, {c.data(), upper_fast::ElemType::f32, 2, 4},
                                   2, {}, 2, ids.data(), scores.data(), counts.data());
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "topk NaN must throw");
}

void test_hydration_odd_sizes() {
  for (std::size_t n : {0u, 1u, 7u, 65u})
    for (std::size_t d : {1u, 5u, 16u})
      for (std::size_t f : {0u, 1u, 3u}) {
        std::vector<float> emb(n * d, 0.5f), feat(n * f, 2.f), out(n * (d + f), -1.f);
        upper_fast::hydrate_products(emb.data(), feat.data(), n, d, f, 0.25f, out.data(), 3);
        for (std::size_t i = 0; i < n; ++i) {
          for (std::size_t j = 0; j < d; ++j) CHECK(out[i * (d + f) + j] == 0.5f, "hydrate emb");
          for (std::size_t j = 0; j < f; ++j) CHECK(out[i * (d + f) + d + j] == 0.5f, "hydrate feature");
        }
        std::vector<float> w(f, 3.f), qo(n * (d + f));
        upper_fast::hydrate_queries(emb.data(), w.data(), n, d, f, qo.data(), 2);
        for (std::size_t i = 0; i < n; ++i)
          for (std::size_t j = 0; j < f; ++j) CHECK(qo[i * (d + f) + d + j] == 3.f, "hydrate query weight");
      }
}

void test_featurizer_untrusted_bytes() {
  upper_fast::Featurizer fz(97, 89, 83);
  upper_fast::FeaturizerScratch scratch;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 40);
  std::vector<std::int64_t> ids;
  std::string norm;
  const char* tricky[] = {"\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80",
                          "caf\xc3\xa9", "\xef\xbc\xa6", "\xef\xac\x81", "a\xcc\x81", "\xe1\x84\x80\xe1\x85\xa1"};
  std::size_t valid = 0, rejected = 0;
  for (int it = 0; it < 6000; ++it) {
    // Exact-size heap buffer, no NUL terminator: any read past the end is an ASan report.
    std::size_t n = static_cast<std::size_t>(len(rng));
    std::unique_ptr<char[]> buf(new char[n == 0 ? 1 : n]);
    std::size_t pos = 0;
    while (pos < n) {
      if (byte(rng) < 40) {
        const char* t = tricky[static_cast<std::size_t>(byte(rng)) % (sizeof tricky / sizeof *tricky)];
        for (std::size_t j = 0; t[j] && pos < n; ++j) buf[pos++] = t[j];
      } else {
        buf[pos++] = static_cast<char>(byte(rng) < 200 ? "ab cd\x00"[byte(rng) % 7] : byte(rng));
      }
    }
    std::string_view text(buf.get(), n);
    try {
      fz.normalize(text, norm, scratch);
      fz.term_ids(text, ids, scratch);
      for (std::int64_t id : ids) CHECK(id >= 1 && id < fz.vocab_size(), "term id %lld out of range", (long long)id);
      std::int64_t out[3] = {-7, -7, -7};
      std::size_t w = fz.term_ids(text, out, 2, scratch);
      CHECK(w <= 2 && out[2] == -7, "term_ids wrote past max_terms");
      ++valid;
    } catch (const std::invalid_argument&) {
      ++rejected;
    }
    std::vector<std::int64_t> mat(2 * 5, -1);
    std::string_view texts[2] = {text, std::string_view()};
    try {
      fz.featurize(texts, 2, 5, mat.data(), 2);
    } catch (const std::invalid_argument&) {
    }
  }
  CHECK(valid > 100 && rejected > 100, "featurizer mix: %zu valid, %zu rejected", valid, rejected);
  bool threw = false;
  try {
    upper_fast::Featurizer bad(0, 1, 1);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "zero buckets must throw");
}

std::string temp_path(const char* name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/upf_rel_" + std::to_string(::getpid()) + "_" + name;
}

void test_index_odd_dims_and_damaged_files() {
  using upper_fast::StorageType;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uf(-1.f, 1.f);
  for (StorageType type : {StorageType::f32, StorageType::bf16, StorageType::i8}) {
    for (std::size_t dim : {1u, 3u, 17u}) {
      const std::size_t n = 40;
      upper_fast::Index index(dim, type, 4, 16, 1);
      std::vector<float> vec(n * dim);
      for (auto& x : vec) x = uf(rng);
      std::vector<std::int64_t> ids(n);
      for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::int64_t>(i * 3 + 1);
      index.add(ids.data(), vec.data(), n, false, 2);
      std::int64_t del[2] = {1, 4};
      index.mark_deleted(del, 2);
      CHECK(index.size() == n - 2, "size after delete");
      const std::size_t k = 50;  // more than there are live ids: padding path
      std::vector<std::int64_t> out_ids(2 * k), counts(2);
      std::vector<float> out_scores(2 * k);
      index.search(vec.data(), 2, k, 0, nullptr, 2, out_ids.data(), out_scores.data(), counts.data());
      for (std::size_t r = 0; r < 2 * k; ++r) CHECK(out_ids[r] != 1 && out_ids[r] != 4, "deleted id returned");
      CHECK(counts[0] <= static_cast<std::int64_t>(n - 2), "count");

      if (dim != 3) continue;  // the file sweep once per storage type is enough
      std::string path = temp_path("idx.upf"), bad = temp_path("bad.upf");
      index.save(path);
      std::ifstream in(path, std::ios::binary);
      std::string blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto loaded = upper_fast::Index::load(path);
      CHECK(loaded->size() == n - 2, "loaded size");
      std::size_t rejected = 0, attempts = 0;
      auto try_load = [&](const std::string& bytes) {
        {
          std::ofstream o(bad, std::ios::binary | std::ios::trunc);
          o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        }
        ++attempts;
        try {
          upper_fast::Index::load(bad);
        } catch (const upper_fast::FormatError&) {
          ++rejected;
        }
      };
      for (std::size_t off = 0; off < blob.size(); off += (off < 256 ? 1 : 7)) try_load(blob.substr(0, off));
      for (std::size_t pos = 0; pos < blob.size(); pos += (pos < 256 ? 1 : 5)) {
        std::string d = blob;
        d[pos] = static_cast<char>(d[pos] ^ (1 << (pos % 8)));
        try_load(d);
      }
      CHECK(rejected == attempts, "%s: %zu of %zu damaged files loaded without FormatError",
            upper_fast::storage_type_name(type), attempts - rejected, attempts);
      std::remove(path.c_str());
      std::remove(bad.c_str());
      std::printf("index %s: %zu damaged files rejected (%zu bytes)\n", upper_fast::storage_type_name(type), rejected,
                  blob.size());
    }
  }
}

}  // namespace

int main() {
  test_dot_kernels_odd_sizes();
  test_dot_special_values();
  test_bf16_conversion();
  test_for_level_rejects_unsupported();
  test_topk_odd_sizes();
  test_hydration_odd_sizes();
  test_featurizer_untrusted_bytes();
  test_index_odd_dims_and_damaged_files();
  if (g_failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_reliability_native: all checks passed (SIMD levels: %zu)\n", available_levels().size());
  return 0;
}
