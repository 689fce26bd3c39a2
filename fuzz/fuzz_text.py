"""Fuzz target "text": the featurizer surface on arbitrary bytes and strings.

Featurizer.normalize / term_ids / featurize and StringIdMap get text decoded from the fuzzer's
bytes in several ways (UTF-8 with replacement, Latin-1, UTF-16 with lone surrogates, raw bytes).
Allowed outcomes: a result that satisfies the contract (ids in range, shapes, padding, id-map
round trip) or a clean TypeError/ValueError (invalid UTF-8, lone surrogates, bytes for str).
Anything else, or a broken property, is a crash.
"""

from __future__ import annotations

import sys

import common  # fuzz/common.py (the script directory is on sys.path)
import numpy as np

import atheris

with common.instrumented():
    import upper_fast

ALLOWED = (TypeError, ValueError)

_STATE: dict[str, object] = {}


def _setup() -> None:
    if "f" in _STATE:
        return
    if not hasattr(upper_fast, "Featurizer"):
        common.skip("upper_fast.Featurizer is not in the package yet")
    config_cls = getattr(upper_fast, "FeaturizerConfig", None)
    # Small buckets so id-range checks are tight and any hashing overflow shows.
    config = (
        config_cls(word_buckets=1009, bigram_buckets=1013, trigram_buckets=1019, max_query_terms=8, max_product_terms=16)
        if config_cls is not None
        else None
    )
    f = upper_fast.Featurizer(config) if config is not None else upper_fast.Featurizer()
    _STATE["f"] = f
    cfg = getattr(f, "config", config)
    _STATE["vocab"] = int(getattr(cfg, "vocab_size", 1 + 1009 + 1013 + 1019))


def _decode(mode: int, raw: bytes) -> "str | bytes":
    if mode == 0:
        return raw.decode("utf-8", errors="replace")
    if mode == 1:
        return raw.decode("latin-1")
    if mode == 2:
        return raw[: len(raw) // 2 * 2].decode("utf-16-le", errors="surrogatepass")
    if mode == 3:
        return raw  # bytes where str is expected
    # Long repetitive text: many terms, truncation paths.
    return raw.decode("utf-8", errors="replace") * 64


def _check_term_ids(ids: np.ndarray, vocab: int) -> None:
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64 and ids.ndim == 1, (type(ids), getattr(ids, "dtype", None))
    if ids.size:
        assert ids.min() >= 1 and ids.max() < vocab, (ids.min(), ids.max(), vocab)


def TestOneInput(data: bytes) -> None:
    _setup()
    f = _STATE["f"]
    vocab = _STATE["vocab"]
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 4)
    max_terms = fdp.ConsumeIntInRange(0, 40)
    text = _decode(mode, fdp.ConsumeBytes(fdp.remaining_bytes()))

    try:
        norm = f.normalize(text)
    except ALLOWED:
        norm = None
    if norm is not None:
        assert isinstance(norm, str)
        assert norm == norm.strip() and "  " not in norm, repr(norm)

    try:
        ids = f.term_ids(text)
    except ALLOWED:
        ids = None
    if ids is not None:
        _check_term_ids(ids, vocab)

    try:
        mat = f.featurize([text, ""], max_terms)
    except ALLOWED:
        mat = None
    if mat is not None:
        assert mat.dtype == np.int64 and mat.shape == (2, max_terms), (mat.dtype, mat.shape)
        assert not mat[1].any(), "empty text must featurize to all padding"
        row = mat[0]
        nz = np.flatnonzero(row == 0)
        if nz.size:
            assert not row[nz[0] :].any(), "padding must be a suffix"
        if ids is not None:
            n = min(ids.size, max_terms)
            assert np.array_equal(row[:n], ids[:n]) and not row[n:].any(), "featurize != term_ids truncated"

    id_map_cls = getattr(upper_fast, "StringIdMap", None)
    if id_map_cls is not None and isinstance(text, str) and norm is not None:
        keys = list(dict.fromkeys(norm.split(" ")))
        try:
            m = id_map_cls(keys)
        except ALLOWED:
            return
        assert len(m) == len(keys)
        rows = m.lookup(keys + [norm + "\x00absent"])
        assert rows.dtype == np.int64 and rows.shape == (len(keys) + 1,)
        assert list(rows[:-1]) == list(range(len(keys))), "StringIdMap must map key i to row i"
        assert rows[-1] == -1


def seeds() -> list[bytes]:
    return [
        b"\x00\x00red wool socks",
        b"\x01\x10Caf\xe9 CR\xc8ME br\xfbl\xe9e",
        "\x00\x05ＦＵＬＬ width ﬁ ligature İstanbul ß straße".encode(),
        b"\x00\x20\xff\xfe\xc0\xaf\xed\xa0\x80 invalid utf8",
        b"\x02\x08\x00\xd8\x41\x00",
        b"\x04\x20a b c d e f g h i j k l m n o p q r s t u v w x y z",
        "\x00\x10emoji 👍🏽 zwj 👨‍👩‍👧 combining é".encode(),
    ]


if __name__ == "__main__":
    common.main(TestOneInput, seeds, _setup)
    sys.exit(0)
