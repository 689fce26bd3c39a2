"""StringIdMap vs a dict oracle."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from upper_fast import Featurizer, StringIdMap


def test_lookup_matches_dict() -> None:
    rng = random.Random(3)
    keys = list({"".join(rng.choice("abcäß日 ") for _ in range(rng.randint(0, 9))) for _ in range(5000)})
    m = StringIdMap(keys)
    oracle = {k: i for i, k in enumerate(keys)}
    probes = keys[::3] + ["missing", "zz", "ab c d e f g h"] + ["".join(rng.choice("abcx") for _ in range(4)) for _ in range(500)]
    got = m.lookup(probes)
    assert got.dtype == np.int64 and got.shape == (len(probes),)
    assert got.tolist() == [oracle.get(p, -1) for p in probes]
    assert np.array_equal(m.lookup(probes, num_threads=1), m.lookup(probes, num_threads=2))
    assert [m.get(p) for p in probes[:200]] == [oracle.get(p, -1) for p in probes[:200]]
    assert len(m) == len(keys) and m.keys() == keys and list(m) == keys
    assert keys[0] in m and "missing" not in m and 5 not in m


def test_empty_and_edge_keys() -> None:
    m = StringIdMap([])
    assert len(m) == 0 and m.get("a") == -1 and m.lookup([]).shape == (0,)
    m = StringIdMap(["", "a\x00b", "a"])
    assert m.lookup(["", "a\x00b", "a", "a\x00"]).tolist() == [0, 1, 2, -1]


def test_query_keys_round_trip() -> None:
    f = Featurizer()
    m = StringIdMap(f.query_keys(["Angle Bracket", "PVC pipe"]))
    assert m.lookup(f.query_keys(["angle-bracket!", "pvc  PIPE", "other"])).tolist() == [0, 1, -1]


def test_pickle_round_trip() -> None:
    m = StringIdMap(["a", "bä", ""])
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.keys() == m.keys() and m2.lookup(["", "bä", "z"]).tolist() == [2, 1, -1]
    f = pickle.loads(pickle.dumps(Featurizer()))
    assert f.term_ids("angle bracket").tolist() == Featurizer().term_ids("angle bracket").tolist()


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"duplicate key 'b' at positions 1 and 3"):
        StringIdMap(["a", "b", "c", "b"])
    with pytest.raises(TypeError, match=r"keys\[1\] must be str"):
        StringIdMap(["a", 1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="wrap it in a list"):
        StringIdMap("abc")
    m = StringIdMap(["a"])
    with pytest.raises(TypeError, match=r"keys\[0\] must be str"):
        m.lookup([b"a"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="key must be str"):
        m.get(3)  # type: ignore[arg-type]


def test_lookup_pyarrow_column() -> None:
    pa = pytest.importorskip("pyarrow")
    m = StringIdMap(["p1", "p2", ""])
    column = pa.chunked_array([pa.array(["p2", None, "zz"]), pa.array(["", "p1"])])
    assert m.lookup(column).tolist() == [1, -1, -1, 2, 0]
    assert m.lookup(pa.array(["x", "p1", "p2"])[1:]).tolist() == [0, 1]


def test_keys_at_returns_the_keys_of_rows_in_order():
    keys = ["p-0", "mug ☕", "", "p-3"]
    m = StringIdMap(keys)
    rows = np.array([3, 1, 1, 0, 2], dtype=np.int64)
    assert m.keys_at(rows) == [keys[i] for i in rows]
    assert m.keys_at(np.empty(0, np.int64)) == []
    with pytest.raises(IndexError, match="row 4 at position 1"):
        m.keys_at(np.array([0, 4], dtype=np.int64))
    with pytest.raises(IndexError, match="row -1"):
        m.keys_at(np.array([-1], dtype=np.int64))
    with pytest.raises(TypeError):
        m.keys_at(np.array([0, 1], dtype=np.int32))
