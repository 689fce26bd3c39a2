"""Checks run in a subprocess under a forced UPPER_FAST_SIMD level (see tests/native/test_simd.py).

Usage: UPPER_FAST_SIMD=<level> python tests/native/simd_check.py <level>
Exits nonzero (assertion) when a kernel of the active table disagrees with the numpy oracle.
"""

from __future__ import annotations

import sys

import numpy as np

import upper_fast
from upper_fast import _core

DIMS = (1, 3, 17, 29, 97, 100, 128, 768)  # 29 and 100 reach the 8- and 4-wide tails


def bf16(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bf16 bits (uint16)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def widen(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def check_dots(rng: np.random.Generator) -> None:
    for d in DIMS:
        a = rng.standard_normal(d).astype(np.float32)
        b = rng.standard_normal(d).astype(np.float32)
        tol = 1e-5 * (np.abs(a).astype(np.float64) @ np.abs(b)) + 1e-6
        assert abs(_core.simd_dot(a, b) - a.astype(np.float64) @ b) <= tol, d
        bb = bf16(b)
        assert abs(_core.simd_dot(a, bb) - a.astype(np.float64) @ widen(bb)) <= tol, d
        ab = bf16(a)
        # vdpbf16ps (AVX-512 BF16) may flush denormals and round per pair: allow a little more.
        ref = widen(ab).astype(np.float64) @ widen(bb)
        assert abs(_core.simd_dot(ab, bb) - ref) <= 4 * tol, d
        ia = rng.integers(-128, 128, d, dtype=np.int8)
        ib = rng.integers(-128, 128, d, dtype=np.int8)
        assert _core.simd_dot(ia, ib) == int(ia.astype(np.int64) @ ib.astype(np.int64)), d
        ext = np.full(d, -128, np.int8)
        assert _core.simd_dot(ext, ext) == 16384 * d, d


def check_axpy(rng: np.random.Generator) -> None:
    for d in DIMS:
        x = rng.standard_normal(d).astype(np.float32)
        y = rng.standard_normal(d).astype(np.float32)
        a = np.float32(rng.standard_normal())
        ref = y.astype(np.float64) + np.float64(a) * x
        got = _core.simd_axpy(float(a), x, y)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got, _core.simd_axpy(float(a), x, y, "scalar"), rtol=1e-6, atol=1e-6)
        assert np.array_equal(y, _core.simd_axpy(0.0, x, y)), d  # inputs untouched, a = 0 is exact


def check_topk(rng: np.random.Generator) -> None:
    for m, n, d, k in ((1, 1, 1, 1), (5, 50, 3, 7), (37, 301, 17, 10), (20, 1000, 97, 5), (33, 700, 128, 32), (3, 40, 768, 4)):
        q = rng.standard_normal((m, d)).astype(np.float32)
        c = rng.standard_normal((n, d)).astype(np.float32)
        s = q.astype(np.float64) @ c.T.astype(np.float64)
        res = upper_fast.topk_inner_product(q, c, k, num_threads=1)
        kk = min(k, n)
        ref_scores = -np.sort(-s, axis=1)[:, :kk]
        np.testing.assert_allclose(res.scores[:, :kk], ref_scores, rtol=1e-4, atol=1e-4 * np.sqrt(d))
        got = np.take_along_axis(s, res.ids[:, :kk], axis=1)
        np.testing.assert_allclose(got, ref_scores, rtol=1e-4, atol=1e-4 * np.sqrt(d))
        assert (res.counts == kk).all()


if __name__ == "__main__":
    level = sys.argv[1]
    assert upper_fast.simd_level() == level, (upper_fast.simd_level(), level)
    generator = np.random.default_rng(7)
    check_dots(generator)
    check_axpy(generator)
    check_topk(generator)
    print(f"ok {level}")
