"""Bad input everywhere a user can reach: every name in `upper_fast.__all__` (and
`upper_fast.data.__all__`) and every `upper-fast` subcommand has an entry in the tables below.

For each callable, a table of bad inputs (wrong dtypes and shapes, NaN/inf, empty, huge k,
negative/unknown ids, invalid UTF-8, over-long strings, missing files) must raise a clean
TypeError/ValueError/IndexError/KeyError/OSError - never another exception type, never a crash -
and a failed call must change no state. The whole table runs in a child process first (so a native
crash shows as a signal, with the case it died in), then each name's verdicts are asserted here.

A public name without an entry FAILS `test_every_public_name_has_an_entry`: add its bad inputs
to SURFACE (or, for a plain constant or data container, to PLAIN with the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import upper_fast
from _paths import child_env

ROOT = Path(__file__).resolve().parents[2]
CLEAN = (TypeError, ValueError, IndexError, KeyError, OSError)
HUGE_K = 2**62


@dataclass
class Case:
    """One bad call. `must_raise`: False when success is also acceptable (e.g. NaN queries may be
    answered); `raises`: the accepted exception types; `check`: runs after the call (state intact)."""

    label: str
    call: Callable[[], object]
    must_raise: bool = True
    raises: tuple[type[BaseException], ...] = CLEAN
    check: Callable[[], None] | None = None


# ----------------------------------------------------------------------------------------------
# Reusable bad-input generators
# ----------------------------------------------------------------------------------------------


def bad_float_matrices(n: int, d: int) -> Iterator[tuple[str, object, bool]]:
    """(label, value, must_raise) for a parameter that wants a C-contiguous (n, d) float32 array."""
    good = np.ones((n, d), dtype=np.float32)
    yield "float64", good.astype(np.float64), True
    yield "int64", good.astype(np.int64), True
    yield "float16", good.astype(np.float16), True
    yield "3-D", good.reshape(1, n, d), True
    yield "wrong dim", np.ones((n, d + 1), dtype=np.float32), True
    yield "non-contiguous", np.ones((n, 2 * d), dtype=np.float32)[:, ::2], True
    if n > 1 and d > 1:
        yield "fortran order", np.asfortranarray(good), True
    yield "None", None, True
    yield "str", "not an array", True
    yield "object array", np.array([[object()] * d] * n, dtype=object), True
    yield "nested list", good.tolist(), False


def bad_ints(name: str) -> Iterator[tuple[str, object, bool]]:
    """(label, value, must_raise) for a positive-int parameter."""
    yield f"{name}=0", 0, True
    yield f"{name}=-1", -1, True
    yield f"{name}=1.5", 1.5, True
    yield f"{name}=str", "3", True
    yield f"{name}=None", None, True
    yield f"{name}=nan", math.nan, True


def _invalid_utf8() -> bytes:
    return b"caf\xc3 \xff\xfe \xed\xa0\x80 \xc0\xaf"


LONG_TEXT = "wool socks " * 200_000  # 2.2 MB


# ----------------------------------------------------------------------------------------------
# Per-name tables
# ----------------------------------------------------------------------------------------------


def cases_simd_level() -> Iterator[Case]:
    yield Case("extra arg", lambda: upper_fast.simd_level("avx2"), raises=(TypeError,))


def cases_cpu_simd_level() -> Iterator[Case]:
    yield Case("extra arg", lambda: upper_fast.cpu_simd_level(1), raises=(TypeError,))


def cases_unicode_version() -> Iterator[Case]:
    yield Case("extra arg", lambda: upper_fast.unicode_version(1), raises=(TypeError,))


def cases_simd_dot() -> Iterator[Case]:
    f = upper_fast.simd_dot
    a = np.ones(17, dtype=np.float32)
    yield Case("length mismatch", lambda: f(a, np.ones(16, dtype=np.float32)))
    yield Case("float64", lambda: f(a.astype(np.float64), a.astype(np.float64)))
    yield Case("f32 x f64", lambda: f(a, a.astype(np.float64)))
    yield Case("int8 x f32", lambda: f(a.astype(np.int8), a))
    yield Case("2-D", lambda: f(a.reshape(1, 17), a.reshape(1, 17)))
    yield Case("strided", lambda: f(np.ones(34, np.float32)[::2], a))
    yield Case("None", lambda: f(None, a))
    yield Case("unknown level", lambda: f(a, a, "avx9000"))
    yield Case("level wrong type", lambda: f(a, a, 3))
    if upper_fast.cpu_simd_level() != "avx512":
        yield Case("level the CPU lacks", lambda: f(a, a, "avx512"), raises=(ValueError,))


def cases_hydrate_products() -> Iterator[Case]:
    f = upper_fast.hydrate_products
    emb, feats = np.ones((5, 8), np.float32), np.ones((5, 3), np.float32)
    for label, bad, must in bad_float_matrices(5, 8):
        if label == "wrong dim":
            continue  # any embedding width is valid
        yield Case(f"emb {label}", lambda bad=bad: f(bad, feats), must_raise=must)
    for label, bad, must in bad_float_matrices(5, 3):
        if label == "wrong dim":
            continue  # any feature width is valid
        yield Case(f"features {label}", lambda bad=bad: f(emb, bad), must_raise=must)
    yield Case("row mismatch", lambda: f(emb, np.ones((4, 3), np.float32)))
    yield Case("NaN scale", lambda: f(emb, feats, math.nan), must_raise=False)
    yield Case("scale str", lambda: f(emb, feats, "x"))
    yield Case("out wrong shape", lambda: f(emb, feats, out=np.empty((5, 10), np.float32)))
    yield Case("out wrong dtype", lambda: f(emb, feats, out=np.empty((5, 11), np.float64)))
    yield Case("out read-only", lambda: f(emb, feats, out=_readonly(np.empty((5, 11), np.float32))))
    big = np.ones((5, 11), np.float32)
    yield Case("out overlaps input", lambda: f(big[:, :8], feats, out=big), raises=CLEAN)
    yield Case("num_threads=-1", lambda: f(emb, feats, num_threads=-1))
    yield Case("empty", lambda: f(np.ones((0, 8), np.float32), np.ones((0, 3), np.float32)), must_raise=False)


def cases_hydrate_queries() -> Iterator[Case]:
    f = upper_fast.hydrate_queries
    q, w = np.ones((4, 8), np.float32), np.ones(3, np.float32)
    for label, bad, must in bad_float_matrices(4, 8):
        if label == "wrong dim":
            continue  # any query width is valid
        yield Case(f"q {label}", lambda bad=bad: f(bad, w), must_raise=must)
    yield Case("weights 2-D", lambda: f(q, np.ones((1, 3), np.float32)))
    yield Case("weights float64", lambda: f(q, np.ones(3)))
    yield Case("weights NaN", lambda: f(q, np.array([1, np.nan, 0], np.float32)))
    yield Case("weights inf", lambda: f(q, np.array([1, np.inf, 0], np.float32)))
    yield Case("out wrong shape", lambda: f(q, w, out=np.empty((4, 12), np.float32)))
    yield Case("num_threads str", lambda: f(q, w, num_threads="2"))


def cases_rerank_exact() -> Iterator[Case]:
    f = upper_fast.rerank_exact
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    b, c = np.zeros(50, np.float32), rng.integers(-1, 50, (3, 20))
    for label, bad, must in bad_float_matrices(3, 8):
        yield Case(f"queries {label}", lambda bad=bad: f(bad, v, b, c, 5), must_raise=must)
    for label, bad, must in bad_float_matrices(50, 8):
        yield Case(f"vectors {label}", lambda bad=bad: f(q, bad, b, c, 5), must_raise=must)
    for label, bad, _ in bad_ints("k"):
        yield Case(label, lambda bad=bad: f(q, v, b, c, bad))
    yield Case("k huge", lambda: f(q, v, b, c, HUGE_K), must_raise=False)
    yield Case("k bool", lambda: f(q, v, b, c, True))
    yield Case("NaN query", lambda: f(np.full((3, 8), np.nan, np.float32), v, b, c, 5))
    yield Case("NaN vectors", lambda: f(q, np.full((50, 8), np.nan, np.float32), b, c, 5), must_raise=False)
    yield Case("bias wrong length", lambda: f(q, v, b[:10], c, 5))
    yield Case("bias float64", lambda: f(q, v, b.astype(np.float64), c, 5))
    yield Case("bias None", lambda: f(q, v, None, c, 5))
    yield Case("candidates int32", lambda: f(q, v, b, c.astype(np.int32), 5))
    yield Case("candidates 1-D", lambda: f(q, v, b, c[0].copy(), 5))
    yield Case("candidates wrong rows", lambda: f(q, v, b, c[:2].copy(), 5))
    yield Case("candidate out of range", lambda: f(q, v, b, np.full((3, 20), 50, np.int64), 5))
    yield Case("candidate huge", lambda: f(q, v, b, np.full((3, 20), 2**62, np.int64), 5))
    yield Case("candidates strided", lambda: f(q, v, b, np.zeros((3, 40), np.int64)[:, ::2], 5))
    yield Case("candidates list", lambda: f(q, v, b, c.tolist(), 5))
    yield Case("no candidates", lambda: f(q, v, b, np.zeros((3, 0), np.int64), 5), must_raise=False)


def cases_topk_inner_product() -> Iterator[Case]:
    f = upper_fast.topk_inner_product
    rng = np.random.default_rng(0)
    q, c = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    for label, bad, must in bad_float_matrices(3, 8):
        yield Case(f"queries {label}", lambda bad=bad: f(bad, c, 5), must_raise=must)
    for label, bad, must in bad_float_matrices(50, 8):
        yield Case(f"candidates {label}", lambda bad=bad: f(q, bad, 5), must_raise=must)
    for label, bad, _ in bad_ints("k"):
        yield Case(label, lambda bad=bad: f(q, c, bad))
    yield Case("k huge", lambda: f(q, c, HUGE_K), must_raise=False)
    yield Case("k=2**31", lambda: f(q, c, 2**31), must_raise=False)
    yield Case("k bool", lambda: f(q, c, True))
    yield Case("NaN query", lambda: f(np.full((3, 8), np.nan, np.float32), c, 5))
    yield Case("inf candidate", lambda: f(q, np.full((50, 8), np.inf, np.float32), 5))
    yield Case("exclude out of range", lambda: f(q, c, 5, exclude=[[50], [], []]))
    yield Case("exclude negative", lambda: f(q, c, 5, exclude=[[-1], [], []]))
    yield Case("exclude wrong count", lambda: f(q, c, 5, exclude=[[1]]))
    yield Case("exclude floats", lambda: f(q, c, 5, exclude=[[1.5], [], []]))
    yield Case("exclude CSR bad indptr", lambda: f(q, c, 5, exclude=(np.array([0, 3, 1, 2]), np.array([1, 2, 3]))))
    yield Case("exclude CSR short indptr", lambda: f(q, c, 5, exclude=(np.array([0, 1]), np.array([1]))))
    yield Case("exclude CSR indptr past end", lambda: f(q, c, 5, exclude=(np.array([0, 1, 2, 99]), np.array([1, 2, 3]))))
    yield Case("exclude CSR float dtype", lambda: f(q, c, 5, exclude=(np.array([0, 1, 2, 3.0]), np.array([1, 2, 3]))))
    yield Case("exclude ndarray", lambda: f(q, c, 5, exclude=np.array([1, 2, 3])))
    yield Case("empty candidates", lambda: f(q, np.ones((0, 8), np.float32), 5), must_raise=False)
    yield Case("num_threads=-3", lambda: f(q, c, 5, num_threads=-3))


def cases_HingeThresholds() -> Iterator[Case]:
    H = upper_fast.HingeThresholds
    good = dict(click=0.1, favorite=0.2, add_to_cart=0.3, purchase=0.4, negative=-0.1)
    h = H(**good)
    before = h.as_dict() if hasattr(h, "as_dict") else None

    def unchanged() -> None:
        if before is not None:
            assert h.as_dict() == before

    yield Case("NaN threshold", lambda: H(**{**good, "click": math.nan}))
    yield Case("inf threshold", lambda: H(**{**good, "purchase": math.inf}))
    yield Case("str threshold", lambda: H(**{**good, "click": "high"}))
    yield Case("missing", lambda: H(click=0.1))
    yield Case("positional", lambda: H(0.1, 0.2, 0.3, 0.4, -0.1))
    yield Case("unordered", lambda: H(**{**good, "click": 0.9}), must_raise=False)
    if hasattr(H, "from_dict"):
        yield Case("from_dict missing key", lambda: H.from_dict({"click": 0.1}))
        yield Case("from_dict not a dict", lambda: H.from_dict([0.1, 0.2]))
        yield Case("from_dict NaN", lambda: H.from_dict({**good, "negative": math.nan}))
    s = np.linspace(-1, 1, 9, dtype=np.float32)
    yield Case("prune float64", lambda: h.prune(s.astype(np.float64)), check=unchanged)
    yield Case("prune NaN", lambda: h.prune(np.array([0.1, np.nan], np.float32)), check=unchanged)
    yield Case("prune min_tier=5", lambda: h.prune(s, 5), check=unchanged)
    yield Case("prune min_tier=-1", lambda: h.prune(s, -1))
    yield Case("prune min_tier name", lambda: h.prune(s, "bogus"))
    yield Case("prune non-contiguous", lambda: h.prune(np.ones(18, np.float32)[::2]))
    yield Case("tier int", lambda: h.tier(np.ones(3, np.int64)))
    yield Case("tier None", lambda: h.tier(None))
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3], np.int64)
    yield Case("hinge labels=5", lambda: h.hinge_loss(s, np.full(9, 5, np.int64)), check=unchanged)
    yield Case("hinge labels=-1", lambda: h.hinge_loss(s, np.full(9, -1, np.int64)))
    yield Case("hinge length mismatch", lambda: h.hinge_loss(s, labels[:5]))
    yield Case("hinge labels float", lambda: h.hinge_loss(s, labels.astype(np.float32)))
    yield Case("hinge NaN scores", lambda: h.hinge_loss(np.full(9, np.nan, np.float32), labels))
    yield Case("hinge weights wrong length", lambda: h.hinge_loss(s, labels, np.ones(3, np.float32)))
    yield Case("calibrate mismatch", lambda: h.calibrate(s, labels[:2]))
    yield Case("calibrate NaN", lambda: h.calibrate(np.full(9, np.nan, np.float32), labels))
    yield Case("calibrate labels=9", lambda: h.calibrate(s, np.full(9, 9, np.int64)))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def cases_FeaturizerConfig() -> Iterator[Case]:
    C = upper_fast.FeaturizerConfig
    for field in ("word_buckets", "bigram_buckets", "trigram_buckets", "max_query_terms", "max_product_terms"):
        for label, bad, _ in bad_ints(field):
            yield Case(label, lambda field=field, bad=bad: C(**{field: bad}))
        yield Case(f"{field} huge", lambda field=field: C(**{field: 2**62}))
    yield Case("unknown field", lambda: C(buckets=3))
    if hasattr(C, "from_dict"):
        yield Case("from_dict unknown key", lambda: C.from_dict({"word_bucket": 3}))
        yield Case("from_dict not a dict", lambda: C.from_dict("word_buckets=3"))
        yield Case("from_dict bad value", lambda: C.from_dict({"word_buckets": -5}))


def cases_Featurizer() -> Iterator[Case]:
    F = upper_fast.Featurizer
    f = F(upper_fast.FeaturizerConfig(word_buckets=97, bigram_buckets=89, trigram_buckets=83))
    ref = f.term_ids("red wool socks")

    def unchanged() -> None:
        assert np.array_equal(f.term_ids("red wool socks"), ref)

    yield Case("config wrong type", lambda: F({"word_buckets": 3}))
    yield Case("config int", lambda: F(5))
    for method in ("normalize", "term_ids", "query_key"):
        m = getattr(f, method, None)
        if m is None:
            continue
        yield Case(f"{method} invalid UTF-8", lambda m=m: m(_invalid_utf8()), raises=(ValueError,), check=unchanged)
        yield Case(f"{method} None", lambda m=m: m(None), raises=(TypeError,))
        yield Case(f"{method} int", lambda m=m: m(5), raises=(TypeError,))
        yield Case(f"{method} list", lambda m=m: m(["a"]), raises=(TypeError,))
        yield Case(f"{method} lone surrogate", lambda m=m: m("a\ud800b"), raises=(ValueError, TypeError))
        yield Case(f"{method} NUL", lambda m=m: m("a\x00b"), must_raise=False)
        yield Case(f"{method} 2 MB", lambda m=m: m(LONG_TEXT), must_raise=False, check=unchanged)
    yield Case("featurize str not list", lambda: f.featurize("red wool", 4), raises=(TypeError,))
    yield Case("featurize None", lambda: f.featurize(None, 4))
    yield Case("featurize mixed", lambda: f.featurize(["ok", 5], 4), raises=(TypeError,))
    yield Case("featurize invalid UTF-8", lambda: f.featurize(["ok", _invalid_utf8()], 4), raises=(ValueError,))
    for label, bad, _ in bad_ints("max_terms"):
        if label == "max_terms=None":
            continue  # None means the config default
        yield Case(f"featurize {label}", lambda bad=bad: f.featurize(["a b"], bad))
    yield Case("featurize max_terms huge", lambda: f.featurize(["a"], 2**40))
    yield Case("featurize num_threads=-1", lambda: f.featurize(["a"], 4, num_threads=-1))
    yield Case("featurize 4 x 2 MB", lambda: f.featurize([LONG_TEXT] * 4, 8), must_raise=False,
               check=unchanged)
    if hasattr(f, "normalize_many"):
        yield Case("normalize_many str", lambda: f.normalize_many("abc"), raises=(TypeError,))
        yield Case("normalize_many invalid", lambda: f.normalize_many(["a", _invalid_utf8()]), raises=(ValueError,))
    if hasattr(F, "from_dict"):
        yield Case("from_dict garbage", lambda: F.from_dict({"word_buckets": "many"}))


def cases_StringIdMap() -> Iterator[Case]:
    S = upper_fast.StringIdMap
    m = S(["a", "b", "c"])

    def unchanged() -> None:
        assert len(m) == 3 and list(m.lookup(["a", "b", "c", "z"])) == [0, 1, 2, -1]

    yield Case("duplicate keys", lambda: S(["a", "b", "a"]), raises=(ValueError,))
    yield Case("non-str key", lambda: S(["a", 5]), raises=(TypeError,))
    yield Case("None keys", lambda: S(None), raises=(TypeError,))
    yield Case("str not list", lambda: S("abc"), raises=(TypeError,))
    yield Case("invalid UTF-8 key", lambda: S(["a", _invalid_utf8()]), must_raise=False)
    yield Case("lone surrogate key", lambda: S(["a\ud800"]), raises=(ValueError, TypeError))
    yield Case("lookup non-str", lambda: m.lookup(["a", None]), raises=(TypeError,), check=unchanged)
    yield Case("lookup str not list", lambda: m.lookup("abc"), raises=(TypeError,), check=unchanged)
    yield Case("lookup 2 MB key", lambda: m.lookup([LONG_TEXT]), must_raise=False, check=unchanged)
    yield Case("get int", lambda: m.get(5), raises=(TypeError,), check=unchanged)
    yield Case("lookup num_threads=-1", lambda: m.lookup(["a"], num_threads=-1), check=unchanged)
    yield Case("keys_at row 3", lambda: m.keys_at(np.array([0, 3], np.int64)), raises=(IndexError,), check=unchanged)
    yield Case("keys_at row -1", lambda: m.keys_at(np.array([-1], np.int64)), raises=(IndexError,), check=unchanged)
    yield Case("keys_at huge row", lambda: m.keys_at(np.array([2**62], np.int64)), raises=(IndexError,), check=unchanged)
    yield Case("keys_at int32", lambda: m.keys_at(np.array([0], np.int32)), raises=(TypeError,), check=unchanged)
    yield Case("keys_at float", lambda: m.keys_at(np.array([0.0])), raises=(TypeError,), check=unchanged)
    yield Case("keys_at 2-D", lambda: m.keys_at(np.zeros((1, 1), np.int64)), raises=(ValueError, TypeError), check=unchanged)
    yield Case("keys_at list", lambda: m.keys_at([0, 1]), raises=(TypeError,), check=unchanged)
    yield Case("keys_at None", lambda: m.keys_at(None), raises=(TypeError,), check=unchanged)


def cases_build_histories() -> Iterator[Case]:
    f = upper_fast.build_histories
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    good = dict(
        event_user=i64(0, 1), event_ts=i64(10, 20), hist_user=i64(0, 1, 0), hist_ts=i64(1, 2, 3),
        hist_product=i64(5, 6, 7), hist_type=np.array([1, 2, 4], np.int8), hist_query=i64(0, 1, -1),
        n_products=3, n_queries=2,
    )
    yield Case("ok baseline", lambda: f(**good), must_raise=False)
    yield Case("length mismatch", lambda: f(**{**good, "hist_ts": i64(1, 2)}))
    yield Case("event length mismatch", lambda: f(**{**good, "event_ts": i64(10)}))
    yield Case("hist_type=7", lambda: f(**{**good, "hist_type": np.array([1, 7, 4], np.int8)}), raises=(ValueError,))
    yield Case("hist_type int64", lambda: f(**{**good, "hist_type": i64(1, 2, 4)}))
    yield Case("ts float", lambda: f(**{**good, "event_ts": np.array([10.0, 20.0])}))
    yield Case("users 2-D", lambda: f(**{**good, "event_user": i64(0, 1).reshape(2, 1)}))
    yield Case("non-contiguous", lambda: f(**{**good, "hist_user": i64(0, 9, 1, 9, 0, 9)[::2]}))
    yield Case("n_products=-1", lambda: f(**{**good, "n_products": -1}))
    yield Case("n_products huge", lambda: f(**{**good, "n_products": 2**40}))
    yield Case("n_queries str", lambda: f(**{**good, "n_queries": "2"}))
    yield Case("None", lambda: f(**{**good, "hist_query": None}))
    yield Case("user id below -1", lambda: f(**{**good, "hist_user": i64(-5, 1, 0)}), must_raise=False)


def cases_Index() -> Iterator[Case]:
    I = upper_fast.Index
    rng = np.random.default_rng(1)
    vec = rng.standard_normal((30, 6)).astype(np.float32)
    idx = I(6, dtype="f32", M=8, ef_construction=20)
    idx.add(np.arange(30, dtype=np.int64), vec)
    ref = idx.search(vec[:4], 5)

    def unchanged() -> None:
        assert len(idx) == 30
        got = idx.search(vec[:4], 5)
        assert np.array_equal(got.ids, ref.ids) and np.array_equal(got.scores, ref.scores)

    yield Case("dim=0", lambda: I(0))
    yield Case("dim=-1", lambda: I(-1))
    yield Case("dim huge", lambda: I(2**40))
    yield Case("dim str", lambda: I("6"))
    yield Case("dtype f16", lambda: I(6, dtype="f16"))
    yield Case("dtype numpy", lambda: I(6, dtype=np.float32))
    yield Case("M=0", lambda: I(6, M=0))
    yield Case("M=1", lambda: I(6, M=1), must_raise=False)
    yield Case("M huge", lambda: I(6, M=2**31))
    yield Case("ef_construction=0", lambda: I(6, ef_construction=0))
    yield Case("seed=-1", lambda: I(6, seed=-1))
    ids = np.arange(100, 103, dtype=np.int64)
    good = rng.standard_normal((3, 6)).astype(np.float32)
    for label, bad, must in bad_float_matrices(3, 6):
        yield Case(f"add vectors {label}", lambda bad=bad: idx.add(ids, bad), must_raise=True, check=unchanged)
    nan = good.copy()
    nan[1, 2] = np.nan
    yield Case("add NaN", lambda: idx.add(ids, nan), check=unchanged)
    inf = good.copy()
    inf[2, 0] = np.inf
    yield Case("add inf", lambda: idx.add(ids, inf), check=unchanged)
    yield Case("add negative id", lambda: idx.add(np.array([100, -1, 102], np.int64), good), check=unchanged)
    yield Case("add duplicate ids", lambda: idx.add(np.array([100, 100, 102], np.int64), good), check=unchanged)
    yield Case("add existing id", lambda: idx.add(np.array([100, 5, 102], np.int64), good), check=unchanged)
    yield Case("add ids int32", lambda: idx.add(ids.astype(np.int32), good), check=unchanged)
    yield Case("add ids float", lambda: idx.add(ids.astype(np.float64), good), check=unchanged)
    yield Case("add count mismatch", lambda: idx.add(ids[:2], good), check=unchanged)
    yield Case("add ids 2-D", lambda: idx.add(ids.reshape(3, 1), good), check=unchanged)
    yield Case("add num_threads=-1", lambda: idx.add(ids, good, num_threads=-1), check=unchanged)
    other = I(6, dtype="i8", M=4, ef_construction=8)
    yield Case("add id huge", lambda: other.add(np.array([2**62, 2**62 + 1, 2**63 - 1], np.int64), good),
               must_raise=False)
    q = vec[:2]
    for label, bad, must in bad_float_matrices(2, 6):
        yield Case(f"search queries {label}", lambda bad=bad: idx.search(bad, 3), must_raise=must, check=unchanged)
    for label, bad, _ in bad_ints("k"):
        yield Case(f"search {label}", lambda bad=bad: idx.search(q, bad), check=unchanged)
    yield Case("search k huge", lambda: idx.search(q, HUGE_K), must_raise=False, check=unchanged)
    yield Case("search NaN query", lambda: idx.search(np.full((1, 6), np.nan, np.float32), 3), must_raise=False,
               check=unchanged)
    yield Case("search ef=-1", lambda: idx.search(q, 3, ef=-1), check=unchanged)
    yield Case("search k=2**31", lambda: idx.search(q, 2**31), must_raise=False, check=unchanged)
    yield Case("search ef huge", lambda: idx.search(q, 3, ef=2**40), must_raise=False, check=unchanged)
    yield Case("search filter float", lambda: idx.search(q, 3, filter=np.array([1.0, 2.0])), check=unchanged)
    yield Case("search filter 2-D", lambda: idx.search(q, 3, filter=np.ones((2, 2), np.int64)), check=unchanged)
    yield Case("search filter negative ids", lambda: idx.search(q, 3, filter=np.array([-1, -5], np.int64)),
               must_raise=False, check=unchanged)
    yield Case("search filter list", lambda: idx.search(q, 3, filter=[1, 2]), must_raise=False, check=unchanged)
    yield Case("search empty queries", lambda: idx.search(np.ones((0, 6), np.float32), 3), must_raise=False)
    yield Case("mark_deleted unknown id", lambda: idx.mark_deleted(np.array([1, 999], np.int64)), check=unchanged)
    yield Case("mark_deleted negative", lambda: idx.mark_deleted(np.array([-1], np.int64)), check=unchanged)
    yield Case("mark_deleted float", lambda: idx.mark_deleted(np.array([1.0])), check=unchanged)
    yield Case("mark_deleted None", lambda: idx.mark_deleted(None), check=unchanged)
    yield Case("ef=0", lambda: setattr(idx, "ef", 0), check=unchanged)
    yield Case("ef=-5", lambda: setattr(idx, "ef", -5), check=unchanged)
    yield Case("load missing", lambda: I.load("/nonexistent/dir/x.upf"), raises=(OSError,))
    yield Case("load directory", lambda: I.load(str(ROOT)), raises=(OSError,))
    yield Case("load None", lambda: I.load(None), raises=(TypeError,))
    yield Case("load bytes path", lambda: I.load(b"/nonexistent"), raises=(TypeError, OSError))
    yield Case("load invalid UTF-8 str path", lambda: I.load("/tmp/\udcff.upf"), raises=(OSError, ValueError))
    yield Case("save into missing dir", lambda: idx.save("/nonexistent/dir/x.upf"), raises=(OSError,), check=unchanged)
    yield Case("save None", lambda: idx.save(None), raises=(TypeError,), check=unchanged)
    if hasattr(I, "read_header"):
        yield Case("read_header missing", lambda: I.read_header("/nonexistent.upf"), raises=(OSError,))
        yield Case("read_header not an index", lambda: I.read_header(__file__), raises=(OSError,))
    yield Case("contains str", lambda: "a" in idx, must_raise=False, check=unchanged)


def cases_Recommender() -> Iterator[Case]:
    R = upper_fast.Recommender
    yield Case("load missing", lambda: R.load("/nonexistent/bundle"), raises=(OSError,))
    yield Case("load a file", lambda: R.load(__file__), raises=(OSError,))
    yield Case("load a folder that is no bundle", lambda: R.load(str(ROOT / "csrc" / "simd")), raises=(OSError,))
    yield Case("load None", lambda: R.load(None), raises=(TypeError,))


def cases_Retriever() -> Iterator[Case]:
    R = upper_fast.Retriever
    yield Case("load missing", lambda: R.load("/nonexistent/bundle"), raises=(OSError,))
    yield Case("load a file", lambda: R.load(__file__), raises=(OSError,))
    yield Case("load empty dir", lambda: R.load(str(ROOT / "csrc" / "simd")), raises=(OSError,))
    yield Case("load None", lambda: R.load(None), raises=(TypeError,))
    bundle = os.environ.get("UPPER_FAST_SURFACE_BUNDLE")
    if not bundle:
        return
    r = R.load(bundle)
    ref = r.search("red wool mug", k=5)

    def unchanged() -> None:
        got = r.search("red wool mug", k=5)
        assert got.product_ids == ref.product_ids and np.array_equal(got.scores, ref.scores)

    yield Case("search None", lambda: r.search(None), raises=(TypeError,), check=unchanged)
    yield Case("search int", lambda: r.search(5), raises=(TypeError,), check=unchanged)
    yield Case("search invalid UTF-8", lambda: r.search(_invalid_utf8()), raises=(TypeError, ValueError), check=unchanged)
    yield Case("search lone surrogate", lambda: r.search("a\ud800"), raises=(ValueError, TypeError), check=unchanged)
    yield Case("search 2 MB query", lambda: r.search(LONG_TEXT, k=3), must_raise=False, check=unchanged)
    yield Case("search empty query", lambda: r.search("", k=3), must_raise=False, check=unchanged)
    for label, bad, _ in bad_ints("k"):
        yield Case(f"search {label}", lambda bad=bad: r.search("mug", k=bad), check=unchanged)
    yield Case("search k huge", lambda: r.search("mug", k=HUGE_K), must_raise=False, check=unchanged)
    yield Case("search user int", lambda: r.search("mug", user=5), raises=(TypeError,), check=unchanged)
    yield Case("search unknown user", lambda: r.search("mug", user="no-such-user"), must_raise=False, check=unchanged)
    U = upper_fast.UserContext
    yield Case("user bad interaction", lambda: r.search("mug", user=U(recent_products=[("p0", "bogus")])),
               raises=(ValueError, KeyError), check=unchanged)
    yield Case("user interaction 9", lambda: r.search("mug", user=U(recent_products=[("p0", 9)])),
               raises=(ValueError,), check=unchanged)
    yield Case("user products not pairs", lambda: r.search("mug", user=U(recent_products=["p0"])),
               raises=(TypeError, ValueError), check=unchanged)
    yield Case("user queries invalid", lambda: r.search("mug", user=U(recent_queries=[_invalid_utf8()])),
               raises=(TypeError, ValueError), check=unchanged)
    yield Case("user unknown country", lambda: r.search("mug", user=U(country="Atlantis")), must_raise=False)
    yield Case("search min_tier=7", lambda: r.search("mug", min_tier=7), check=unchanged)
    yield Case("search filter bogus ids", lambda: r.search("mug", k=3, filter=["no-such-product"]), must_raise=False,
               check=unchanged)
    yield Case("search filter int", lambda: r.search("mug", k=3, filter=5), raises=(TypeError, ValueError),
               check=unchanged)
    yield Case("batch str not list", lambda: r.search_batch("mug"), raises=(TypeError,), check=unchanged)

    def set_attr(name: str, value: object) -> None:
        setattr(r, name, value)

    for bad in (0, -3, 1.5, "64", None, True):
        yield Case(f"ef = {bad!r}", lambda bad=bad: set_attr("ef", bad), raises=(ValueError,), check=unchanged)
    yield Case("fusion = 5", lambda: set_attr("fusion", 5), raises=(ValueError, TypeError), check=unchanged)
    yield Case("batch users mismatch", lambda: r.search_batch(["a", "b"], users=[None]), check=unchanged)
    yield Case("batch None item", lambda: r.search_batch(["a", None]), raises=(TypeError,), check=unchanged)
    yield Case("batch k=0", lambda: r.search_batch(["a"], k=0), check=unchanged)
    yield Case("batch empty", lambda: r.search_batch([]), must_raise=False, check=unchanged)
    yield Case("swap missing", lambda: r.swap("/nonexistent/bundle"), raises=(OSError,), check=unchanged)
    yield Case("swap a file", lambda: r.swap(__file__), raises=(OSError,), check=unchanged)
    yield Case("swap None", lambda: r.swap(None), raises=(TypeError,), check=unchanged)


def cases_load_dataset() -> Iterator[Case]:
    from upper_fast import data

    f = data.load_dataset
    yield Case("missing path", lambda: f(NOT_A_DIR), raises=(OSError,))
    yield Case("a source file", lambda: f(__file__), raises=(OSError, ValueError))
    yield Case("empty dir", lambda: f(str(ROOT / "csrc" / "simd")), raises=(OSError, ValueError))
    yield Case("None", lambda: f(None), raises=(TypeError,))
    yield Case("config wrong type", lambda: f(NOT_A_DIR, config=5), raises=(TypeError, OSError))


NOT_A_DIR = str(Path(__file__).resolve()) + "/no/such/dir"  # under a regular file: cannot be created, even as root


def cases_validate_dataset() -> Iterator[Case]:
    from upper_fast import data

    f = data.validate_dataset
    yield Case("missing path", lambda: f(NOT_A_DIR), raises=(OSError,))
    yield Case("a source file", lambda: f(__file__), raises=(OSError, ValueError))
    yield Case("None", lambda: f(None), raises=(TypeError,))
    yield Case("config wrong type", lambda: f(NOT_A_DIR, config=5), raises=(TypeError, OSError))
    yield Case("quarantine under a file", lambda: f(NOT_A_DIR, quarantine_dir=NOT_A_DIR), raises=(OSError,))


def cases_validate_catalog_rows() -> Iterator[Case]:
    from upper_fast import data

    f = data.validate_catalog_rows
    ok = {"product_id": "p1", "title": "oak table", "price": 12.5}
    yield Case("not rows", lambda: f("p1", []), raises=(TypeError,))
    yield Case("a row that is not a dict", lambda: f([ok, 5], []), raises=(TypeError,))
    yield Case("unknown column", lambda: f([{**ok, "colour": "red"}], []), raises=(data.CatalogRowsError,))
    yield Case("missing title", lambda: f([{"product_id": "p2", "price": 3.0}], []), raises=(data.CatalogRowsError,))
    yield Case("price not a number", lambda: f([{**ok, "price": "cheap"}], []), raises=(data.CatalogRowsError,))
    yield Case("repeated id", lambda: f([ok, ok], []), raises=(data.CatalogRowsError,))


def cases_generate() -> Iterator[Case]:
    from upper_fast_train import simulate

    f = simulate.generate
    yield Case("out under a file", lambda: f(NOT_A_DIR, n_products=20, n_users=5, n_queries=5, n_events=50,
                                             progress=False), raises=(OSError,))
    for field in ("n_products", "n_users", "n_queries", "n_events"):
        yield Case(f"{field}=-1", lambda field=field: f(NOT_A_DIR, progress=False, **{field: -1}))
        yield Case(f"{field}=str", lambda field=field: f(NOT_A_DIR, progress=False, **{field: "many"}))
    yield Case("scale=nan", lambda: f(NOT_A_DIR, scale=math.nan, progress=False))
    yield Case("scale=-1", lambda: f(NOT_A_DIR, scale=-1.0, progress=False))
    yield Case("unknown override", lambda: f(NOT_A_DIR, progress=False, no_such_knob=3))


def cases_measure_world() -> Iterator[Case]:
    from upper_fast_train import simulate

    yield Case("missing dir", lambda: simulate.measure_world(NOT_A_DIR), raises=(OSError,))
    yield Case("not a dataset", lambda: simulate.measure_world(str(ROOT / "csrc")), raises=(OSError,))
    yield Case("None", lambda: simulate.measure_world(None), raises=(TypeError,))


def cases_load_homedepot() -> Iterator[Case]:
    from upper_fast_train import realdata

    yield Case("missing root", lambda: realdata.load_homedepot(NOT_A_DIR), raises=(OSError,))
    yield Case("held-out split", lambda: realdata.load_homedepot(NOT_A_DIR, split="test"), raises=(ValueError, OSError))
    yield Case("split None", lambda: realdata.load_homedepot(NOT_A_DIR, split=None), raises=(ValueError, TypeError, OSError))
    yield Case("root is a file", lambda: realdata.load_homedepot(__file__), raises=(OSError,))


def cases_load_crowdflower() -> Iterator[Case]:
    from upper_fast_train import realdata

    yield Case("missing root", lambda: realdata.load_crowdflower(NOT_A_DIR), raises=(OSError,))
    yield Case("root is a file", lambda: realdata.load_crowdflower(__file__), raises=(OSError,))
    yield Case("None", lambda: realdata.load_crowdflower(None), raises=(TypeError, OSError))


def cases_DataConfig() -> Iterator[Case]:
    from upper_fast import data

    C = data.DataConfig
    yield Case("from_any int", lambda: C.from_any(5), raises=(TypeError,))
    yield Case("from_any missing file", lambda: C.from_any(NOT_A_DIR + ".json"), raises=(OSError, ValueError))
    yield Case("from_any not JSON", lambda: C.from_any(str(ROOT / "README.md")), raises=(ValueError,))
    yield Case("rename not a mapping", lambda: C.from_any({"search_log": ["ts"]}), raises=(ValueError, TypeError))
    yield Case("max_query_chars=0", lambda: C.from_any({"max_query_chars": 0}), raises=(ValueError,))
    yield Case("tags_separator empty", lambda: C.from_any({"tags_separator": ""}), raises=(ValueError,))
    yield Case("batch_rows=-1", lambda: C.from_any({"batch_rows": -1}), raises=(ValueError,))


# Names with a table of bad inputs.
SURFACE: dict[str, Callable[[], Iterator[Case]]] = {
    "simd_level": cases_simd_level,
    "cpu_simd_level": cases_cpu_simd_level,
    "unicode_version": cases_unicode_version,
    "simd_dot": cases_simd_dot,
    "hydrate_products": cases_hydrate_products,
    "hydrate_queries": cases_hydrate_queries,
    "topk_inner_product": cases_topk_inner_product,
    "rerank_exact": cases_rerank_exact,
    "HingeThresholds": cases_HingeThresholds,
    "FeaturizerConfig": cases_FeaturizerConfig,
    "Featurizer": cases_Featurizer,
    "StringIdMap": cases_StringIdMap,
    "build_histories": cases_build_histories,
    "Index": cases_Index,
    "Recommender": cases_Recommender,
    "Retriever": cases_Retriever,
    "data.load_dataset": cases_load_dataset,
    "data.validate_dataset": cases_validate_dataset,
    "data.validate_catalog_rows": cases_validate_catalog_rows,
    "upper_fast_train.simulate.generate": cases_generate,
    "upper_fast_train.simulate.measure_world": cases_measure_world,
    "upper_fast_train.realdata.load_homedepot": cases_load_homedepot,
    "upper_fast_train.realdata.load_crowdflower": cases_load_crowdflower,
    "data.DataConfig": cases_DataConfig,
}

# Public names that take no user input of their own (constants, exception types, plain result
# containers validated where they are consumed), each with the check that still applies.


def _check_constants() -> None:
    types = upper_fast.INTERACTION_TYPES
    assert isinstance(types, tuple) and types[0] == "negative"
    for name, code in upper_fast.INTERACTION_CODES.items():
        assert types[code] == name


PLAIN: dict[str, tuple[str, Callable[[], None]]] = {
    "__version__": ("a string", lambda: isinstance(upper_fast.__version__, str) or pytest.fail("not a str")),
    "FormatError": ("the exception type raised for damaged files",
                    lambda: issubclass(upper_fast.FormatError, OSError) or pytest.fail("FormatError must be an OSError")),
    "TopK": ("result container (NamedTuple) returned by the core", lambda: None),
    "Hit": ("result container (frozen dataclass) returned by Retriever.search", lambda: None),
    "SearchResult": ("result container returned by Retriever.search", lambda: None),
    "SearchStages": ("returned by Retriever.stages(); its bad inputs are those of Retriever.search, covered there",
                     lambda: None),
    "UserContext": ("input container: its bad values are covered through Retriever.search", lambda: None),
    "INTERACTION_TYPES": ("constant", _check_constants),
    "INTERACTION_CODES": ("constant", _check_constants),
    "data.Dataset": ("result container returned by load_dataset", lambda: None),
    "data.FileReport": ("result container inside ValidationReport", lambda: None),
    "data.CatalogRowsError": ("exception type raised by validate_catalog_rows and Retriever.upsert_products", lambda: None),
    "data.ValidationReport": ("result container returned by load_dataset / validate_dataset", lambda: None),
    "upper_fast_train.realdata.JudgedSet": ("result container returned by load_homedepot / load_crowdflower", lambda: None),
    "upper_fast_train.simulate.WorldParams": ("input container: its bad values are covered through generate", lambda: None),
    "data.INTERACTIONS": ("constant", lambda: None),
    "data.INTERACTION_CODES": ("constant", lambda: None),
    "data.REASONS": ("constant (quarantine reason names)", lambda: None),
}


def public_names() -> list[str]:
    names = list(upper_fast.__all__)
    try:
        from upper_fast import data

        names += [f"data.{n}" for n in getattr(data, "__all__", [])]
    except ImportError:
        pass
    names += ["upper_fast_train.simulate.generate", "upper_fast_train.simulate.measure_world",
              "upper_fast_train.simulate.WorldParams", "upper_fast_train.realdata.load_homedepot",
              "upper_fast_train.realdata.load_crowdflower", "upper_fast_train.realdata.JudgedSet"]
    return names


def _resolve(name: str) -> object | None:
    """upper_fast.<name>; a name starting "upper_fast_train." is the training package's (its
    simulator and real-data loaders: training-time code with a public surface of its own)."""
    obj: object = upper_fast
    if name.startswith("upper_fast_train."):
        import importlib

        module, _, name = name[len("upper_fast_train."):].rpartition(".")
        try:
            obj = importlib.import_module(f"upper_fast_train.{module}")
        except ImportError:
            return None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


# ----------------------------------------------------------------------------------------------
# Running the table (in a child process: `python tests/serving/test_public_surface.py --run OUT.json`)
# ----------------------------------------------------------------------------------------------


def run_cases(name: str) -> list[dict]:
    """Runs every case of one name; returns one verdict dict per case."""
    verdicts = []
    for case in SURFACE[name]():
        print(f"CASE {name}: {case.label}", file=sys.stderr, flush=True)
        v = {"name": name, "label": case.label, "ok": True, "detail": ""}
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                case.call()
            if case.must_raise:
                v.update(ok=False, detail="accepted without an error")
        except case.raises:
            pass
        except BaseException as exc:  # noqa: BLE001 - the point is to report any other type
            v.update(ok=False, detail=f"raised {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}")
        if case.check is not None:
            try:
                case.check()
            except BaseException as exc:  # noqa: BLE001
                v.update(ok=False, detail=(v["detail"] + f"; state changed by the failed call: {exc!r}")[:500])
        verdicts.append(v)
    return verdicts


def _child_main(out: Path) -> int:
    results = []
    for name in public_names():
        if name in SURFACE and _resolve(name) is not None:
            results += run_cases(name)
            out.write_text(json.dumps(results))  # partial results survive a crash
    out.write_text(json.dumps(results + [{"name": "__done__"}]))
    return 0


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("surface") / "verdicts.json"
    env = child_env()
    env["PYTHONPATH"] += os.pathsep + str(ROOT / "tests")  # this file, run as a script, imports _paths from there
    bundle = _tiny_bundle(tmp_path_factory)
    if bundle is not None:
        env["UPPER_FAST_SURFACE_BUNDLE"] = str(bundle)
    proc = subprocess.run([sys.executable, __file__, "--run", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    results = json.loads(out.read_text()) if out.exists() else []
    done = bool(results) and results[-1].get("name") == "__done__"
    last_case = [ln for ln in proc.stderr.splitlines() if ln.startswith("CASE ")][-1:] or ["(none)"]
    if proc.returncode != 0 or not done:
        pytest.fail(f"the surface child died (rc={proc.returncode}) during {last_case[0]}:\n{proc.stderr[-3000:]}")
    by_name: dict[str, list[dict]] = {}
    for v in results[:-1]:
        by_name.setdefault(v["name"], []).append(v)
    return by_name


def _tiny_bundle(tmp_path_factory: pytest.TempPathFactory | None) -> Path | None:
    """A tiny real bundle (ONNX tower exported by torch, via tests/serve_tiny.py), if it can be built."""
    if _resolve("Retriever") is None:
        return None
    sys.path.insert(0, str(ROOT / "fuzz"))
    try:
        import common

        return common.cached_bundle()
    except Exception as exc:  # noqa: BLE001 - the serving tests own bundle building; path cases still run
        print(f"no tiny bundle for the Retriever cases: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def test_every_public_name_has_an_entry() -> None:
    missing = [n for n in public_names() if n not in SURFACE and n not in PLAIN]
    assert not missing, (
        f"public names without a bad-input table in tests/serving/test_public_surface.py: {missing}. "
        "Add cases_<name> to SURFACE (or a PLAIN entry with the reason for a constant/container)."
    )


# Mishandled inputs found by this table and reported to their owners (docs/reliability.md, "Bugs
# found"), keyed by (name, case label). They are expected to fail until fixed; once a fix lands the
# case passes and the test FAILS, asking to delete the entry (so the table cannot rot).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_bad_inputs_raise_clean_errors(name: str, verdicts: dict[str, list[dict]]) -> None:
    if _resolve(name) is None:
        pytest.skip(f"upper_fast.{name} is not in the package yet")
    results = verdicts.get(name, [])
    assert results, f"no cases ran for {name}"
    bad = [f"{v['label']}: {v['detail']}" for v in results if not v["ok"] and (name, v["label"]) not in KNOWN_BUGS]
    fixed = [v["label"] for v in results if v["ok"] and (name, v["label"]) in KNOWN_BUGS]
    assert not bad, f"{name}: {len(bad)} of {len(results)} bad inputs mishandled:\n  " + "\n  ".join(bad)
    assert not fixed, f"{name}: known bugs now fixed, delete them from KNOWN_BUGS: {fixed}"
    known = [k for k in KNOWN_BUGS if k[0] == name]
    if known:
        print(f"{name}: {len(results)} bad inputs, {len(known)} known open bug(s): {[k[1] for k in known]}")


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_names(name: str) -> None:
    if _resolve(name) is None:
        pytest.skip(f"upper_fast.{name} is not in the package yet")
    PLAIN[name][1]()


# ----------------------------------------------------------------------------------------------
# The CLI
# ----------------------------------------------------------------------------------------------

MISSING = NOT_A_DIR

# Extra bad argv per subcommand, beyond the generic ones made from each parser's own arguments
# (no arguments when some are required, every positional a path that cannot exist, every int/float
# option "many"). "{bundle}" stands for a tiny real bundle when one can be built.
CLI_CASES: dict[str, list[list[str]]] = {
    "generate": [[MISSING, "--products", "-5"], [MISSING, "--scale", "nan"]],
    "validate": [[str(ROOT / "README.md")], [str(ROOT / "csrc")]],
    "train": [[MISSING, MISSING + "-run"], [str(ROOT / "csrc"), MISSING]],
    "eval": [[MISSING], [str(ROOT / "csrc")]],
    "export": [[MISSING, MISSING + "-bundle", "--data", MISSING]],
    "search": [[MISSING, "red mug"], ["{bundle}", "mug", "--k", "-5"], ["{bundle}", "mug", "--k", "0"],
               ["{bundle}", "mug", "--min-tier", "9"], ["{bundle}", "mug", "--threads", "-1"],
               [str(ROOT / "csrc"), "mug"]],
    "info": [[str(ROOT / "README.md")], [str(ROOT / "csrc")]],
    "demo": [[MISSING]],
    "recommend": [[MISSING, "p1"], ["{bundle}", "p1", "-k", "-5"], ["{bundle}", "p1", "--from", "teleport"]],
    "train-interactions": [[MISSING, MISSING + "-run"], [MISSING, MISSING + "-run", "--dim", "-3"]],
    "export-interactions": [[MISSING, MISSING + "-bundle"], [str(ROOT / "csrc"), MISSING + "-bundle"]],
    "push-milvus": [[MISSING, MISSING + ".db"], ["{bundle}", MISSING + ".db", "--fields", MISSING + ".parquet"]],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from upper_fast.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _generic_argvs(name: str, sub: argparse.ArgumentParser) -> list[list[str]]:
    """Bad invocations derived from the parser itself, none of which can start real work."""
    actions = [a for a in sub._actions if a.dest != "help"]
    positionals = [a for a in actions if not a.option_strings]
    required = positionals or [a for a in actions if a.required]
    argvs = [[name]] if required else []  # argparse must reject a missing required argument
    base = [name] + [MISSING] * len(positionals)
    for a in actions:
        if a.option_strings and a.required:
            base += [a.option_strings[-1], MISSING]
    if positionals:
        argvs.append(base)
    for a in actions:
        if a.option_strings and a.type in (int, float):
            argvs.append(base + [a.option_strings[-1], "many"])  # argparse rejects before any work
    return argvs


_CLI_CHILD = r"""
import contextlib, io, json, sys
from upper_fast.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    print("CLI", argv, file=sys.stderr, flush=True)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:
        out.append({"argv": argv, "rc": None, "exc": type(exc).__name__ + ": " + str(exc)[:300]})
        continue
    out.append({"argv": argv, "rc": rc, "stderr": err.getvalue()[-500:]})
print(json.dumps(out))
"""


def test_every_subcommand_has_an_entry() -> None:
    missing = sorted(set(_subparsers()) - set(CLI_CASES))
    assert not missing, f"subcommands without bad-input cases in CLI_CASES: {missing}"


def test_cli_bad_invocations_fail_cleanly() -> None:
    subs = _subparsers()
    if not subs:
        pytest.skip("no upper-fast subcommands are registered yet")
    argvs: list[list[str]] = []
    bundle = _tiny_bundle(None) if any("{bundle}" in x for c in CLI_CASES.values() for x in sum(c, [])) else None
    for name, sub in subs.items():
        argvs += _generic_argvs(name, sub)
        for extra in CLI_CASES.get(name, []):
            if "{bundle}" in extra and bundle is None:
                continue
            argvs.append([name, *(str(bundle) if x == "{bundle}" else x for x in extra)])
    env = child_env()
    proc = subprocess.run([sys.executable, "-c", _CLI_CHILD, json.dumps(argvs)], capture_output=True, text=True,
                          env=env, timeout=300)
    last = [ln for ln in proc.stderr.splitlines() if ln.startswith("CLI ")][-1:] or ["(none)"]
    assert proc.returncode == 0, f"CLI child died (rc={proc.returncode}) during {last[0]}:\n{proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = []
    for r in results:
        if r["rc"] is None:
            bad.append(f"{r['argv']}: escaped main() as {r['exc']}")
        elif r["rc"] == 0:
            bad.append(f"{r['argv']}: exit status 0 for a bad invocation")
        elif "Traceback" in r.get("stderr", ""):
            bad.append(f"{r['argv']}: printed a traceback")
    assert not bad, f"{len(bad)} of {len(results)} bad invocations mishandled:\n  " + "\n  ".join(bad)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--run":
    sys.exit(_child_main(Path(sys.argv[2])))
