#include "unicode_norm.h"

#include <algorithm>
#include <cstdio>

namespace upper_fast::unicode {
namespace {

struct CodePointRecord {
  std::uint8_t ccc;
  std::uint8_t cls;
  std::uint8_t decomp_len;
  std::uint8_t fold_len;
  std::uint16_t decomp_off;
  std::uint16_t fold_off;
};

#include "unicode_tables.inc"

enum CharClass : std::uint8_t { kSeparator = 0, kToken = 1, kDrop = 2 };

// Hangul syllables are composed and decomposed arithmetically (Unicode 3.12), not by table.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

inline const CodePointRecord& record(char32_t cp) {
  const std::uint32_t block = kStage1[cp >> kBlockShift];
  return kRecords[kStage2[(block << kBlockShift) | (cp & kBlockMask)]];
}

inline char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const std::uint64_t key = (std::uint64_t{a} << 21) | b;
  const std::uint64_t* end = kPairKeys + sizeof(kPairKeys) / sizeof(kPairKeys[0]);
  const std::uint64_t* it = std::lower_bound(kPairKeys, end, key);
  return (it != end && *it == key) ? kPairValues[it - kPairKeys] : 0;
}

// Lowercase ASCII letters and digits map to themselves; 0 marks a separator.
struct AsciiMap {
  char map[128];
  constexpr AsciiMap() : map() {
    for (int c = 0; c < 128; ++c) {
      if (c >= 'a' && c <= 'z') map[c] = static_cast<char>(c);
      else if (c >= 'A' && c <= 'Z') map[c] = static_cast<char>(c - 'A' + 'a');
      else if (c >= '0' && c <= '9') map[c] = static_cast<char>(c);
      else map[c] = 0;
    }
  }
};
constexpr AsciiMap kAscii{};

bool is_ascii(std::string_view s) {
  unsigned char acc = 0;
  for (unsigned char c : s) acc |= c;
  return acc < 0x80;
}

// Full compatibility decomposition, canonical ordering, canonical composition, in place.
void nfkc_code_points(std::vector<char32_t>& cps) {
  const std::size_t n_in = cps.size();
  // Decompose behind the input: the decomposed text is appended, then moved to the front.
  for (std::size_t i = 0; i < n_in; ++i) {
    const char32_t cp = cps[i];
    if (cp >= kSBase && cp < kSBase + kSCount) {
      const char32_t s = cp - kSBase;
      cps.push_back(kLBase + s / kNCount);
      cps.push_back(kVBase + (s % kNCount) / kTCount);
      if (s % kTCount != 0) cps.push_back(kTBase + s % kTCount);
      continue;
    }
    const CodePointRecord& r = record(cp);
    if (r.decomp_len == 0) {
      cps.push_back(cp);
    } else {
      cps.insert(cps.end(), kDecompPool + r.decomp_off, kDecompPool + r.decomp_off + r.decomp_len);
    }
  }
  cps.erase(cps.begin(), cps.begin() + static_cast<std::ptrdiff_t>(n_in));

  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  const std::size_t n = cps.size();
  for (std::size_t i = 1; i < n; ++i) {
    const char32_t c = cps[i];
    const std::uint8_t cc = record(c).ccc;
    if (cc == 0) continue;
    std::size_t j = i;
    while (j > 0 && record(cps[j - 1]).ccc > cc) {
      cps[j] = cps[j - 1];
      --j;
    }
    cps[j] = c;
  }

  // Canonical composition: a character composes with the last starter unless blocked by an
  // intervening character of class 0 or of a class >= its own.
  constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::size_t starter = kNone, out = 0;
  int last_ccc = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const char32_t c = cps[i];
    const int cc = record(c).ccc;
    if (starter != kNone && (out == starter + 1 || last_ccc < cc)) {
      const char32_t composite = compose_pair(cps[starter], c);
      if (composite != 0) {
        cps[starter] = composite;
        continue;
      }
    }
    if (cc == 0) starter = out;
    last_ccc = cc;
    cps[out++] = c;
  }
  cps.resize(out);
}

}  // namespace

Utf8Error::Utf8Error(std::size_t byte_offset, const char* what)
    : std::invalid_argument(std::string("invalid UTF-8 at byte offset ") + std::to_string(byte_offset) +
                            ": " + what),
      byte_offset_(byte_offset) {}

const char* unicode_version() { return kUnicodeVersion; }

void decode_utf8(std::string_view in, std::vector<char32_t>& out) {
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  const std::size_t n = in.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char b0 = s[i];
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    char32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      cp = b0 & 0x0F;
      if (b0 == 0xE0) lo = 0xA0;       // overlong
      else if (b0 == 0xED) hi = 0x9F;  // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      cp = b0 & 0x07;
      if (b0 == 0xF0) lo = 0x90;       // overlong
      else if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      throw Utf8Error(i, b0 < 0xC0 ? "unexpected continuation byte" : "invalid lead byte");
    }
    if (i + len > n) throw Utf8Error(i, "truncated multi-byte sequence");
    if (s[i + 1] < lo || s[i + 1] > hi)
      throw Utf8Error(i, "invalid continuation (overlong, surrogate or out of range)");
    cp = (cp << 6) | (s[i + 1] & 0x3F);
    for (std::size_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) throw Utf8Error(i, "invalid continuation byte");
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    out.push_back(cp);
    i += len;
  }
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void nfkc(std::string_view in, std::string& out, Scratch& scratch) {
  out.clear();
  if (is_ascii(in)) {
    out.assign(in.data(), in.size());
    return;
  }
  scratch.code_points.clear();
  decode_utf8(in, scratch.code_points);
  nfkc_code_points(scratch.code_points);
  for (char32_t cp : scratch.code_points) append_utf8(cp, out);
}

void normalize_text(std::string_view in, std::string& out, Scratch& scratch) {
  out.clear();
  bool pending_space = false;
  if (is_ascii(in)) {
    for (unsigned char c : in) {
      const char m = kAscii.map[c];
      if (m == 0) {
        pending_space = true;
        continue;
      }
      if (pending_space && !out.empty()) out.push_back(' ');
      pending_space = false;
      out.push_back(m);
    }
    return;
  }
  scratch.code_points.clear();
  decode_utf8(in, scratch.code_points);
  nfkc_code_points(scratch.code_points);
  auto emit = [&](char32_t cp, std::uint8_t cls) {
    if (cls == kSeparator) {
      pending_space = true;
    } else if (cls == kToken) {
      if (pending_space && !out.empty()) out.push_back(' ');
      pending_space = false;
      append_utf8(cp, out);
    }
  };
  for (char32_t cp : scratch.code_points) {
    const CodePointRecord& r = record(cp);
    if (r.fold_len == 0) {
      emit(cp, r.cls);
      continue;
    }
    for (std::uint16_t k = 0; k < r.fold_len; ++k) {
      const char32_t f = kFoldPool[r.fold_off + k];
      emit(f, record(f).cls);
    }
  }
}

}  // namespace upper_fast::unicode
