"""HingeThresholds: validation, prune, tier, hinge loss + gradient vs numpy, calibrate, JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from upper_fast import INTERACTION_TYPES, HingeThresholds

T = dict(click=0.3, favorite=0.4, add_to_cart=0.5, purchase=0.6, negative=0.1)


def theta() -> np.ndarray:
    return np.array([T["negative"], T["click"], T["favorite"], T["add_to_cart"], T["purchase"]], np.float32)


def numpy_loss(s: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> tuple[float, np.ndarray]:
    th = theta()
    margin = np.where(y > 0, th[y] - s, s - th[0]).astype(np.float32)
    w = np.ones_like(s) if w is None else w
    loss = float((w.astype(np.float64) * np.maximum(margin, 0)).sum() / len(s))
    grad = np.where(margin > 0, np.where(y > 0, -1.0, 1.0) * w / len(s), 0.0).astype(np.float32)
    return loss, grad


def test_validation_rule() -> None:
    HingeThresholds(click=0.2, favorite=0.2, add_to_cart=0.2, purchase=0.2, negative=0.1)
    with pytest.raises(ValueError, match="negative < click"):
        HingeThresholds(**{**T, "negative": 0.3})
    with pytest.raises(ValueError, match="favorite <= add_to_cart"):
        HingeThresholds(**{**T, "add_to_cart": 0.35})
    with pytest.raises(ValueError, match="click <= favorite"):
        HingeThresholds(**{**T, "favorite": 0.2})
    with pytest.raises(ValueError, match="finite"):
        HingeThresholds(**{**T, "purchase": math.inf})
    with pytest.raises(ValueError, match="finite"):
        HingeThresholds(**{**T, "negative": math.nan})
    with pytest.raises(TypeError, match="number"):
        HingeThresholds(**{**T, "click": "0.3"})
    with pytest.raises(TypeError):
        HingeThresholds(0.3, 0.4, 0.5, 0.6, 0.1)  # keyword-only


def test_dict_roundtrip_through_json() -> None:
    t = HingeThresholds(**T)
    d = json.loads(json.dumps(t.as_dict()))
    assert set(d) == set(INTERACTION_TYPES)
    assert HingeThresholds.from_dict(d) == t
    assert t.thresholds["click"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="missing \\['purchase'\\]"):
        HingeThresholds.from_dict({k: v for k, v in d.items() if k != "purchase"})
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        HingeThresholds.from_dict({**d, "extra": 1.0})


def test_prune_and_tier() -> None:
    t = HingeThresholds(**T)
    s = np.array([-np.inf, 0.0, 0.1, 0.2, 0.3, 0.45, 0.5, 0.59, 0.6, 0.9, np.inf], np.float32)
    th = theta()
    for cut in range(5):
        np.testing.assert_array_equal(t.prune(s, cut), s >= th[cut])
    np.testing.assert_array_equal(t.prune(s), s >= th[0])
    np.testing.assert_array_equal(t.prune(s, "add_to_cart"), s >= th[3])
    tiers = t.tier(s)
    assert tiers.dtype == np.int8
    expected = np.array([sum(x >= th[c] for c in range(1, 5)) for x in s], np.int8)
    np.testing.assert_array_equal(tiers, expected)
    m = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    assert t.prune(m).shape == (3, 7) and t.tier(m).shape == (3, 7)
    np.testing.assert_array_equal(t.prune(m, 1), m >= th[1])


@pytest.mark.parametrize("weighted", [False, True])
def test_hinge_loss_and_grad_match_numpy(weighted: bool) -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(-0.5, 1.0, 1000).astype(np.float32)
    y = rng.integers(0, 5, 1000).astype(np.int64)
    w = rng.uniform(0, 2, 1000).astype(np.float32) if weighted else None
    loss, grad = HingeThresholds(**T).hinge_loss(s, y, w)
    ref_loss, ref_grad = numpy_loss(s, y, w)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert grad.dtype == np.float32 and grad.shape == (1000,)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-9)


def test_hinge_gradient_is_a_finite_difference_and_zero_at_the_kink() -> None:
    t = HingeThresholds(**T)
    s = np.array([0.0, 0.2, 0.7, 0.1, 0.3], np.float32)
    y = np.array([4, 0, 1, 0, 1], np.int64)
    loss, grad = t.hinge_loss(s, y)
    # rows: purchase below (0.6), negative above (0.1), click above, negative at its kink, click at its kink
    np.testing.assert_allclose(grad, np.array([-1, 1, 0, 0, 0]) / 5, atol=1e-7)
    assert loss == pytest.approx(((0.6 - 0.0) + (0.2 - 0.1)) / 5, rel=1e-6)


def test_hinge_loss_errors() -> None:
    t = HingeThresholds(**T)
    s = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="interaction code"):
        t.hinge_loss(s, np.array([0, 5, 1], np.int64))
    with pytest.raises(TypeError, match="int64"):
        t.hinge_loss(s, np.array([0, 1, 1], np.int32))
    with pytest.raises(ValueError, match="same length"):
        t.hinge_loss(s, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="not finite"):
        t.hinge_loss(np.array([0, np.inf, 0], np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="NaN"):
        t.hinge_loss(np.array([0, np.nan, 0], np.float32), np.zeros(3, np.int64))
    loss, grad = t.hinge_loss(np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert loss == 0.0 and grad.shape == (0,)
    with pytest.raises(ValueError, match="one entry per score"):
        t.hinge_loss(s, np.zeros(3, np.int64), np.ones(2, np.float32))
    with pytest.raises(TypeError, match="float32"):
        t.hinge_loss(s.astype(np.float64), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="ascontiguousarray"):
        t.hinge_loss(np.zeros(6, np.float32)[::2], np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="min_tier"):
        t.prune(s, 5)
    with pytest.raises(ValueError, match="min_tier"):
        t.prune(s, "view")
    with pytest.raises(ValueError, match="NaN"):
        t.tier(np.array([np.nan], np.float32))


def test_calibrate_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    s = rng.uniform(-0.2, 1.0, 5000).astype(np.float32)
    y = rng.integers(0, 4, 5000).astype(np.int64)  # no purchases: their recall is NaN
    t = HingeThresholds(**T)
    cal = t.calibrate(s, y)
    th = theta()
    assert cal["n"] == 5000
    for c, cut in enumerate(INTERACTION_TYPES):
        entry = cal["cuts"][cut]
        assert entry["threshold"] == pytest.approx(float(th[c]))
        assert entry["kept_fraction"] == pytest.approx(np.mean(s >= th[c]))
        for j, name in enumerate(INTERACTION_TYPES):
            rows = y == j
            assert cal["count"][name] == rows.sum()
            if rows.any():
                assert entry["recall"][name] == pytest.approx(np.mean(s[rows] >= th[c]))
            else:
                assert math.isnan(entry["recall"][name])
    with pytest.raises(ValueError, match="interaction code"):
        t.calibrate(s, np.full(5000, -1, np.int64))


def test_hinge_loss_matches_torch_autograd() -> None:
    torch = pytest.importorskip("torch", reason="torch (the [train] extra) is not installed")
    rng = np.random.default_rng(4)
    s = rng.uniform(-0.5, 1.0, 257).astype(np.float32)
    y = rng.integers(0, 5, 257).astype(np.int64)
    w = rng.uniform(0, 2, 257).astype(np.float32)
    ts = torch.tensor(s, requires_grad=True)
    th = torch.tensor(theta())
    ty = torch.tensor(y)
    margin = torch.where(ty > 0, th[ty] - ts, ts - th[0])
    loss = (torch.tensor(w) * torch.relu(margin)).mean()
    loss.backward()
    ours, grad = HingeThresholds(**T).hinge_loss(s, y, w)
    assert ours == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(grad, ts.grad.numpy(), rtol=1e-6, atol=1e-9)


def _finish_oracle(t, ids, scores, boost, k, min_tier, prune):
    """What the Retriever did in numpy before finish_hits: skip padding, cos, prune, first k, tiers."""
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    cos = scores - boost[ids]
    if prune:
        ok = t.prune(cos, min_tier) if not np.isnan(cos).any() else (cos >= t._core.threshold(min_tier))
        ids, scores, cos = ids[ok], scores[ok], cos[ok]
    ids, scores, cos = ids[:k], scores[:k], cos[:k]
    return ids, scores, cos, t.tier(cos)


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("min_tier", [0, 2, 4])
def test_finish_hits_matches_the_numpy_path(prune, min_tier):
    rng = np.random.default_rng(min_tier)
    t = HingeThresholds(click=0.5, favorite=0.55, add_to_cart=0.6, purchase=0.65, negative=0.2)
    n, m = 1000, 150
    boost = (rng.random(n) * 0.1).astype(np.float32)
    ids = rng.integers(0, n, m).astype(np.int64)
    ids[-7:] = -1  # the index pads missing hits at the end
    ids[40] = -1  # and a padding entry in the middle is skipped too
    scores = (rng.random(m) * 0.9).astype(np.float32)
    for k in (0, 10, 100, 200):
        got = t._core.finish_hits(ids, scores, boost, k, min_tier, prune)
        ref = _finish_oracle(t, ids, scores, boost, k, min_tier, prune)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)
        assert got[0].dtype == np.int64 and got[1].dtype == np.float32 and got[3].dtype == np.int8


def test_finish_hits_rejects_bad_input_and_drops_nan():
    t = HingeThresholds(click=0.5, favorite=0.55, add_to_cart=0.6, purchase=0.65, negative=0.2)
    boost = np.zeros(4, np.float32)
    ids = np.array([0, 1, 2], np.int64)
    s = np.array([0.9, np.nan, 0.7], np.float32)
    out_ids, _, cos, tiers = t._core.finish_hits(ids, s, boost, 10, 0, True)
    assert out_ids.tolist() == [0, 2] and tiers.tolist() == [4, 4]  # NaN never kept
    with pytest.raises(ValueError, match="out of range"):
        t._core.finish_hits(np.array([0, 4], np.int64), s[:2], boost, 10, 0, True)
    with pytest.raises(ValueError, match="same length"):
        t._core.finish_hits(ids, s[:2], boost, 10, 0, True)
    with pytest.raises(ValueError, match="min_tier"):
        t._core.finish_hits(ids, s, boost, 10, 5, True)
    with pytest.raises(ValueError, match="k must be"):
        t._core.finish_hits(ids, s, boost, -1, 0, True)
    with pytest.raises((TypeError, ValueError)):
        t._core.finish_hits(ids.astype(np.int32), s, boost, 10, 0, True)
