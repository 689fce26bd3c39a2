"""Pure-Python reference of the featurizer (the oracle the C++ core is tested against).

Mirrors docs/featurizer.md exactly, using only the standard library's unicodedata.
"""

from __future__ import annotations

import unicodedata

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1


def fnv1a64(data: bytes, state: int = FNV_OFFSET) -> int:
    for byte in data:
        state = ((state ^ byte) * FNV_PRIME) & MASK64
    return state


def fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & MASK64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & MASK64
    k ^= k >> 33
    return k


def term_hash(prefix: bytes, term: str) -> int:
    return fmix64(fnv1a64(prefix + term.encode("utf-8")))


def char_class(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat[0] in "LNM":
        return "token"
    if cat == "Cf":
        return "drop"
    return "sep"


def normalize(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    mapped = "".join(
        ch if char_class(ch) == "token" else ("" if char_class(ch) == "drop" else " ") for ch in folded
    )
    return " ".join(t for t in mapped.split(" ") if t)


def stem_plural(word: str) -> str:
    """Harman's "S" plural rules as docs/featurizer.md states them, on the word's UTF-8 bytes."""
    b = word.encode("utf-8")
    if len(b) < 4 or not b.endswith(b"s") or b[-2:-1] in (b"u", b"s"):
        return word
    if b.endswith(b"ies") and b[-4:-3] not in (b"a", b"e"):
        return (b[:-3] + b"y").decode("utf-8")
    return b[:-1].decode("utf-8")


def term_ids(text: str, word_buckets: int, bigram_buckets: int, trigram_buckets: int,
             stem_plurals: bool = False) -> list[int]:
    words = normalize(text).split(" ") if normalize(text) else []
    if stem_plurals:
        words = [stem_plural(w) for w in words]
    ids = [1 + term_hash(b"w:", w) % word_buckets for w in words]
    base = 1 + word_buckets
    ids += [base + term_hash(b"b:", a + " " + b) % bigram_buckets for a, b in zip(words, words[1:])]
    base = 1 + word_buckets + bigram_buckets
    for w in words:
        marked = "#" + w + "#"
        ids += [base + term_hash(b"c:", marked[i : i + 3]) % trigram_buckets for i in range(len(w))]
    return ids
