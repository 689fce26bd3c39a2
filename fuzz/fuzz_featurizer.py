"""Atheris fuzz target for the featurizer core: normalisation, term ids, StringIdMap, histories,
raw Arrow offset/data buffers.

    PYTHONPATH=python python fuzz/fuzz_featurizer.py -atheris_runs=100000 [corpus_dir]

Every input is checked against the pure-Python oracles (tests/featurizer_reference.py and
unicodedata); any mismatch, crash or unexpected exception type is a finding.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import atheris  # noqa: E402

with atheris.instrument_imports():
    import featurizer_reference as ref  # noqa: E402

from upper_fast import Featurizer, FeaturizerConfig, StringIdMap, _core, build_histories  # noqa: E402

FEATURIZER = Featurizer(FeaturizerConfig(word_buckets=101, bigram_buckets=103, trigram_buckets=107))


def check_bytes(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        try:
            FEATURIZER.normalize(data)
        except ValueError as err:
            assert f"byte offset {exc.start}" in str(err), (data, str(err), exc.start)
            return
        raise AssertionError(f"invalid UTF-8 accepted: {data!r}")
    assert FEATURIZER.normalize(data) == FEATURIZER.normalize(text)
    check_text(text)


def check_text(text: str) -> None:
    assert _core._nfkc_many([text])[0] == unicodedata.normalize("NFKC", text), text
    assert FEATURIZER.normalize(text) == ref.normalize(text), text
    ids = FEATURIZER.term_ids(text)
    assert ids.tolist() == ref.term_ids(text, 101, 103, 107), text
    row = FEATURIZER.featurize([text], 5)[0]
    assert row.tolist() == (ids.tolist() + [0] * 5)[:5]


def check_id_map(fdp: atheris.FuzzedDataProvider) -> None:
    keys = [fdp.ConsumeUnicodeNoSurrogates(4) for _ in range(fdp.ConsumeIntInRange(0, 12))]
    probes = keys + [fdp.ConsumeUnicodeNoSurrogates(4) for _ in range(4)]
    if len(set(keys)) != len(keys):
        try:
            StringIdMap(keys)
        except ValueError as err:
            assert "duplicate key" in str(err)
            return
        raise AssertionError(f"duplicates accepted: {keys!r}")
    m = StringIdMap(keys)
    oracle = {k: i for i, k in enumerate(keys)}
    assert m.lookup(probes).tolist() == [oracle.get(p, -1) for p in probes]


def check_histories(fdp: atheris.FuzzedDataProvider) -> None:
    h, n = fdp.ConsumeIntInRange(0, 20), fdp.ConsumeIntInRange(0, 8)

    def ints(count: int, low: int, high: int) -> np.ndarray:
        return np.array([fdp.ConsumeIntInRange(low, high) for _ in range(count)], np.int64)

    hu, ht, hp, hq = ints(h, -1, 2), ints(h, 0, 5), ints(h, -1, 5), ints(h, -1, 3)
    hy = ints(h, 0, 4).astype(np.int8)
    eu, et = ints(n, -1, 3), ints(n, 0, 6)
    n_p, n_q = fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, 3)
    products, types, queries = build_histories(eu, et, hu, ht, hp, hy, hq, n_products=n_p, n_queries=n_q)
    for e in range(n):
        rows = sorted((r for r in range(h) if eu[e] >= 0 and hu[r] == eu[e] and ht[r] < et[e]),
                      key=lambda r: (ht[r], r), reverse=True)
        engaged = [r for r in rows if hy[r] >= 1 and hp[r] >= 0][:n_p]
        assert products[e].tolist() == [int(hp[r]) for r in engaged] + [-1] * (n_p - len(engaged))
        assert types[e].tolist() == [int(hy[r]) for r in engaged] + [0] * (n_p - len(engaged))
        distinct: list[int] = []
        for r in rows:
            if hq[r] >= 0 and int(hq[r]) not in distinct:
                distinct.append(int(hq[r]))
        distinct = distinct[:n_q]
        assert queries[e].tolist() == distinct + [-1] * (n_q - len(distinct))


def check_arrow_buffers(fdp: atheris.FuzzedDataProvider) -> None:
    # Raw offset/data buffers as a foreign caller might pass them: a clean error or a correct result.
    n = fdp.ConsumeIntInRange(0, 6)
    dtype = np.int32 if fdp.ConsumeBool() else np.int64
    offsets = np.array([fdp.ConsumeIntInRange(-2, 12) for _ in range(n + 1)], dtype)
    data = np.frombuffer(fdp.ConsumeBytes(10), dtype=np.uint8)
    out = np.empty((n, 3), np.int64)
    try:
        FEATURIZER._impl.featurize_arrow(offsets, data, out, 1)
    except ValueError:
        return
    raw = data.tobytes()
    for i in range(n):
        text = raw[offsets[i] : offsets[i + 1]].decode("utf-8")
        assert out[i].tolist() == FEATURIZER.featurize([text], 3)[0].tolist()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        check_bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    elif choice == 1:
        check_text(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))
    elif choice == 2:
        check_id_map(fdp)
    elif choice == 3:
        check_histories(fdp)
    else:
        check_arrow_buffers(fdp)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
