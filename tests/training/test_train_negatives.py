"""Negatives never include a row's own positives; the weight schedule is linear after warm-up."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _train_synthetic import tiny_config  # noqa: E402

from upper_fast_train.negatives import (  # noqa: E402
    DynamicPool,
    excluded_products,
    hardest,
    membership,
    negative_weights,
    own_positive_mask,
)


def _batch(seed: int = 0, b: int = 40):
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(rng.integers(0, 15, b))
    groups = torch.from_numpy(rng.integers(0, 8, b))
    labels = torch.from_numpy(rng.integers(0, 5, b))
    return rows, groups, labels


def _oracle_positive_sets(rows, groups, labels):
    rows, groups, labels = rows.numpy(), groups.numpy(), labels.numpy()
    out = []
    for i in range(len(rows)):
        engaged = {int(rows[r]) for r in range(len(rows)) if groups[r] == groups[i] and labels[r] > 0}
        out.append(engaged | {int(rows[i])})
    return out


def test_own_positive_mask_matches_oracle():
    rows, groups, labels = _batch()
    mask = own_positive_mask(rows, groups, labels).numpy()
    sets = _oracle_positive_sets(rows, groups, labels)
    expected = np.array([[int(rows[j]) in sets[i] for j in range(len(rows))] for i in range(len(rows))])
    np.testing.assert_array_equal(mask, expected)
    sets_arr = excluded_products(rows, groups, labels)
    assert [set(r[r >= 0].tolist()) for r in sets_arr] == sets


def test_hardest_inbatch_never_returns_own_positives():
    rows, groups, labels = _batch(1)
    excluded = own_positive_mask(rows, groups, labels)
    scores = torch.rand(len(rows), len(rows))
    scores[excluded] = 10.0  # own positives score highest: they must still be skipped
    top, valid = hardest(scores, excluded, 5)
    assert (top[valid] < 10).all()
    ref = scores.masked_fill(excluded, -1).topk(5, dim=1).values
    torch.testing.assert_close(torch.where(valid, top, -torch.ones_like(top)), torch.where(ref >= 0, ref, -torch.ones_like(ref)))


def test_uniform_membership_flags_own_positives():
    rows, groups, labels = _batch(2)
    sets = excluded_products(rows, groups, labels)
    cand = np.arange(15)
    member = membership(cand, sets)
    oracle = _oracle_positive_sets(rows, groups, labels)
    for i in range(len(rows)):
        assert set(cand[member[i]].tolist()) == oracle[i]


def test_schedule_warms_up_on_uniform_then_ramps_linearly():
    cfg = tiny_config(warmup_fraction=0.2, uniform_weight_start=1.0, uniform_weight_end=0.2, inbatch_weight_end=1.0, dynamic_weight_end=0.5)
    w = [negative_weights(s, 101, cfg) for s in range(101)]
    warm = [x for i, x in enumerate(w) if i < 20.2]
    assert all(x == {"uniform": 1.0, "inbatch": 0.0, "dynamic": 0.0} for x in warm)
    assert w[-1]["uniform"] == pytest.approx(0.2) and w[-1]["inbatch"] == pytest.approx(1.0) and w[-1]["dynamic"] == pytest.approx(0.5)
    tail = np.array([x["inbatch"] for x in w[21:]])
    np.testing.assert_allclose(np.diff(tail), np.diff(tail)[0], atol=1e-9)  # linear
    u = np.array([x["uniform"] for x in w])
    assert (np.diff(u) <= 1e-12).all()
    with pytest.raises(ValueError):
        negative_weights(0, 0, cfg)


def test_dynamic_pool_mines_top_scores_without_own_positives():
    import upper_fast

    if not hasattr(upper_fast, "topk_inner_product"):
        pytest.skip("upper_fast.topk_inner_product is not built in this checkout (kernels area)")
    cfg = tiny_config(dim=8, dynamic_pool=30, dynamic_refresh=2)
    rng = np.random.default_rng(0)
    catalog = rng.standard_normal((50, 8)).astype(np.float32)
    pool = DynamicPool(50, cfg, seed=0)
    assert pool.due(0)
    pool.refresh(0, lambda rows: catalog[rows])
    assert not pool.due(1) and pool.due(2)
    q = rng.standard_normal((6, 8)).astype(np.float32)
    excluded = np.full((6, 2), -1, np.int64)
    best = pool.rows[np.argmax(q @ pool.vectors.T, axis=1)]
    excluded[:, 0] = best  # exclude each row's best pool product
    excluded[0, 1] = 49 if 49 not in pool.rows else pool.rows[0]
    mined = pool.mine(q, excluded, 3)
    for i in range(6):
        assert not set(mined[i].tolist()) & set(excluded[i].tolist())
        allowed = [r for r in pool.rows if r not in excluded[i]]
        scores = {r: float(q[i] @ catalog[r]) for r in allowed}
        assert mined[i].tolist() == sorted(scores, key=lambda r: -scores[r])[:3]


def test_another_users_positive_for_the_same_query_is_no_negative_by_default():
    """Two users bought different products for one query: by default (exclude_query_positives) neither
    product is a negative of the other's row; with the flag off (query-user groups) they are."""
    from _train_synthetic import tiny_world

    from upper_fast_train.loop import negative_groups

    config = tiny_config()
    data, _ = tiny_world(config)
    q = data.queries.event_query
    same_query = np.flatnonzero(q == q[np.argmax(np.bincount(q))])  # rows of the most frequent query
    diff_user = [r for r in same_query if data.groups[r] != data.groups[same_query[0]]]
    idx = np.array([same_query[0], diff_user[0]])
    data.labels[idx] = 4
    data.product_rows[idx] = [1, 2]
    rows, labels = torch.from_numpy(data.product_rows[idx]), torch.from_numpy(data.labels[idx])
    by_query = own_positive_mask(rows, torch.from_numpy(negative_groups(data, idx, config)), labels)
    assert by_query.all()
    config.negatives.exclude_query_positives = False
    by_user = own_positive_mask(rows, torch.from_numpy(negative_groups(data, idx, config)), labels)
    assert not by_user[0, 1] and not by_user[1, 0]
