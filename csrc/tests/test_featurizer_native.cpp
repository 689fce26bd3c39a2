// Native tests of the featurizer core (no Python): UTF-8 errors, NFKC samples, the hash against
// ids computed by tests/featurizer_reference.py, StringIdMap and build_histories. Exit 1 on failure.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "featurizer.h"
#include "history.h"
#include "id_map.h"
#include "unicode_norm.h"

using namespace upper_fast;

static int failures = 0;
#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

static std::string nfkc(std::string_view s) {
  unicode::Scratch scratch;
  std::string out;
  unicode::nfkc(s, out, scratch);
  return out;
}

static long utf8_error_offset(std::string_view s) {
  try {
    nfkc(s);
  } catch (const unicode::Utf8Error& e) {
    return static_cast<long>(e.byte_offset());
  }
  return -1;
}

static void test_unicode() {
  CHECK(nfkc("e\xcc\x81") == "\xc3\xa9");                            // e + acute -> é
  CHECK(nfkc("\xef\xac\x81") == "fi");                               // ﬁ ligature
  CHECK(nfkc("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8") == "\xea\xb0\x81");  // Hangul jamo -> 각
  CHECK(nfkc("a\xcc\x87\xcc\xa3") == "\xe1\xba\xa1\xcc\x87");        // reorder, then compose with dot below
  CHECK(nfkc("\xe2\x84\xab") == "\xc3\x85");                         // Angstrom sign -> Å
  CHECK(nfkc("\xe0\xad\x87\xe0\xac\xbe") == "\xe0\xad\x8b");         // Oriya two-part vowel
  CHECK(nfkc("x\xcd\x84") == "\xe1\xba\x8d\xcc\x81");                // non-starter decomposition
  CHECK(utf8_error_offset("ab\xff") == 2);
  CHECK(utf8_error_offset("\x80") == 0);
  CHECK(utf8_error_offset("ok \xe2\x82") == 3);
  CHECK(utf8_error_offset("\xc0\xaf") == 0);
  CHECK(utf8_error_offset("x\xed\xa0\x80") == 1);
  CHECK(utf8_error_offset("\xf4\x90\x80\x80") == 0);
  CHECK(utf8_error_offset("caf\xc3\xa9") == -1);
  unicode::Scratch scratch;
  std::string out;
  unicode::normalize_text("  Hello,   WORLD!! Stra\xc3\x9f" "e soft\xc2\xad" "hyphen ", out, scratch);
  CHECK(out == "hello world strasse softhyphen");
}

static void test_hash() {
  const Featurizer f(262144, 262144, 131072);
  FeaturizerScratch scratch;
  std::vector<std::int64_t> ids;
  f.term_ids("angle bracket", ids, scratch);
  const std::vector<std::int64_t> expected = {164545, 47571,  405162, 593697, 626549, 578906, 632723, 637509,
                                              634453, 642205, 650278, 616651, 628917, 601560, 589260};
  CHECK(ids == expected);
  f.term_ids("K\xc3\xa4" "fer", ids, scratch);
  CHECK((ids == std::vector<std::int64_t>{50570, 597284, 633466, 625066, 592986, 589567}));

  std::vector<std::string> texts;
  for (int i = 0; i < 3000; ++i) texts.push_back("query " + std::to_string(i) + " gr\xc3\xb6\xc3\x9f" "e");
  std::vector<std::string_view> views(texts.begin(), texts.end());
  std::vector<std::int64_t> one(texts.size() * 6), two(texts.size() * 6);
  f.featurize(views.data(), views.size(), 6, one.data(), 1);
  f.featurize(views.data(), views.size(), 6, two.data(), 2);
  CHECK(one == two);
  std::int64_t row[6];
  const std::size_t n = f.term_ids(views[7], row, 6, scratch);
  CHECK(n == 6);
  for (std::size_t k = 0; k < n; ++k) CHECK(row[k] == one[7 * 6 + k]);

  bool threw = false;
  try {
    Featurizer bad(0, 1, 1);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
}

static std::string stemmed(std::string w) {
  return w.substr(0, stem_plural(w.data(), w.size()));
}

static void test_stem_plurals() {
  CHECK(stemmed("doors") == "door");
  CHECK(stemmed("batteries") == "battery");
  CHECK(stemmed("shoes") == "shoe");
  CHECK(stemmed("boxes") == "boxe");        // "es" -> "e", as the S stemmer has it
  CHECK(stemmed("plays") == "play");
  CHECK(stemmed("aies") == "aie");          // "ies" after "a" only drops the "s"
  CHECK(stemmed("class") == "class");       // "ss"
  CHECK(stemmed("cactus") == "cactus");     // "us"
  CHECK(stemmed("gas") == "gas");           // under 4 bytes
  CHECK(stemmed("door") == "door");
  CHECK(stemmed("sÃ©ries") == "sÃ©ry");
  CHECK(stemmed("cafÃ©s") == "cafÃ©");
  CHECK(stemmed("") == "");
  // Through the featurizer: the stemmed text's ids equal the singular's, and bigrams and trigrams
  // follow the stem; without the flag nothing changes.
  const Featurizer plain(4096, 4096, 4096), stem(4096, 4096, 4096, true);
  FeaturizerScratch scratch;
  std::vector<std::int64_t> a, b, c;
  stem.term_ids("oak doors, 2 batteries", a, scratch);
  plain.term_ids("oak door 2 battery", b, scratch);
  CHECK(a == b);
  plain.term_ids("oak doors, 2 batteries", c, scratch);
  CHECK(c != b);
  std::int64_t row[3];
  CHECK(stem.term_ids("doors", row, 3, scratch) == 3);  // word + trigrams of "door", truncated to 3
  plain.term_ids("door", b, scratch);
  CHECK(row[0] == b[0] && row[1] == b[1] && row[2] == b[2]);
}

static void test_id_map() {
  const std::vector<std::string_view> keys = {"a", "", "b\xc3\xa4", "long key with spaces"};
  const StringIdMap m(keys);
  CHECK(m.size() == 4);
  CHECK(m.find("a") == 0 && m.find("") == 1 && m.find("b\xc3\xa4") == 2 && m.find("c") == -1);
  CHECK(m.key(3) == "long key with spaces");
  bool threw = false;
  try {
    StringIdMap dup(std::vector<std::string_view>{"x", "y", "x"});
  } catch (const DuplicateKeyError& e) {
    threw = e.first == 0 && e.second == 2;
  }
  CHECK(threw);
}

static void test_histories() {
  // One user: rows at t = 1 (click p7, q0), 5 (purchase p8, q1), 5 (impression, q0), 9 (q2).
  const std::int64_t hu[] = {0, 0, 0, 0}, ht[] = {1, 5, 5, 9}, hp[] = {7, 8, 3, -1}, hq[] = {0, 1, 0, 2};
  const std::int8_t hy[] = {1, 4, 0, 0};
  const HistoryLog log{4, hu, ht, hp, hy, hq};
  const std::int64_t eu[] = {0, 0, -1, 1}, et[] = {5, 6, 6, 6};
  std::vector<std::int64_t> products(4 * 2), queries(4 * 2);
  std::vector<std::int8_t> types(4 * 2);
  build_histories(4, eu, et, log, HistoryOutput{2, 2, products.data(), types.data(), queries.data()}, 1);
  CHECK((products == std::vector<std::int64_t>{7, -1, 8, 7, -1, -1, -1, -1}));
  CHECK((types == std::vector<std::int8_t>{1, 0, 4, 1, 0, 0, 0, 0}));
  CHECK((queries == std::vector<std::int64_t>{0, -1, 0, 1, -1, -1, -1, -1}));
}

int main() {
  test_unicode();
  test_hash();
  test_stem_plurals();
  test_id_map();
  test_histories();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::puts("test_featurizer_native: all checks passed");
  return 0;
}
