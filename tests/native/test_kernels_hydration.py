"""hydrate_products / hydrate_queries vs numpy concatenation, with and without out=."""

from __future__ import annotations

import numpy as np
import pytest

from upper_fast import hydrate_products, hydrate_queries


@pytest.mark.parametrize("d,f", [(1, 1), (3, 0), (0, 5), (17, 7), (128, 13), (768, 3)])
def test_products_match_numpy(d: int, f: int) -> None:
    rng = np.random.default_rng(d * 31 + f)
    emb = rng.standard_normal((29, d)).astype(np.float32)
    feat = rng.standard_normal((29, f)).astype(np.float32)
    out = hydrate_products(emb, feat, scale=0.25)
    np.testing.assert_array_equal(out, np.concatenate([emb, np.float32(0.25) * feat], axis=1))
    assert out.dtype == np.float32 and out.flags.c_contiguous


@pytest.mark.parametrize("d,f", [(1, 1), (17, 7), (128, 0), (0, 4), (768, 3)])
def test_queries_match_numpy(d: int, f: int) -> None:
    rng = np.random.default_rng(d + f)
    q = rng.standard_normal((11, d)).astype(np.float32)
    w = rng.standard_normal(f).astype(np.float32)
    out = hydrate_queries(q, w)
    np.testing.assert_array_equal(out, np.concatenate([q, np.broadcast_to(w, (11, f))], axis=1))


def test_inner_product_identity() -> None:
    rng = np.random.default_rng(0)
    e, x = rng.standard_normal((40, 16)).astype(np.float32), rng.standard_normal((40, 4)).astype(np.float32)
    q, w = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    lhs = hydrate_queries(q, w) @ hydrate_products(e, x, scale=2.0).T
    np.testing.assert_allclose(lhs, q @ e.T + 2.0 * (w @ x.T), rtol=1e-5, atol=1e-5)


def test_large_batch_multithreaded_with_out() -> None:
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((20000, 24)).astype(np.float32)
    feat = rng.standard_normal((20000, 5)).astype(np.float32)
    out = np.empty((20000, 29), np.float32)
    got = hydrate_products(emb, feat, scale=3.0, out=out, num_threads=4)
    assert got is out or np.shares_memory(got, out)
    np.testing.assert_array_equal(out, np.concatenate([emb, np.float32(3.0) * feat], axis=1))
    q = rng.standard_normal((20000, 24)).astype(np.float32)
    w = rng.standard_normal(5).astype(np.float32)
    got = hydrate_queries(q, w, out=out, num_threads=4)
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(out[:, 24:], np.broadcast_to(w, (20000, 5)))


def test_errors() -> None:
    e = np.ones((4, 3), np.float32)
    x = np.ones((4, 2), np.float32)
    with pytest.raises(TypeError, match="astype"):
        hydrate_products(e.astype(np.float64), x)
    with pytest.raises(ValueError, match="differ in rows"):
        hydrate_products(e, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="ascontiguousarray"):
        hydrate_products(np.asfortranarray(e), x)
    with pytest.raises(ValueError, match="2-D"):
        hydrate_products(e[0], x)
    with pytest.raises(ValueError, match="shape \\(4, 5\\)"):
        hydrate_products(e, x, out=np.empty((4, 6), np.float32))
    with pytest.raises(TypeError, match="float32"):
        hydrate_products(e, x, out=np.empty((4, 5), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        hydrate_products(e, x, out=np.empty((5, 4), np.float32).T)
    ro = np.empty((4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        hydrate_products(e, x, out=ro)
    big = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        hydrate_queries(big.reshape(-1)[:12].reshape(4, 3), np.ones(2, np.float32), out=big)
    with pytest.raises(ValueError, match="finite"):
        hydrate_products(e, x, scale=float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        hydrate_queries(e, np.array([1.0, np.inf], np.float32))
    with pytest.raises(ValueError, match="1-D"):
        hydrate_queries(e, np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        hydrate_queries(e, [1.0, 2.0])
