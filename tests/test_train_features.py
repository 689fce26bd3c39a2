"""Training histories stop before the event's search session: a purchase never sees its own click."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from upper_fast_train.features import session_starts  # noqa: E402


def _oracle(users, queries, ts, gap):
    out = []
    for i in range(len(ts)):
        if users[i] < 0:
            out.append(ts[i])
            continue
        mine = sorted(t for u, q, t in zip(users, queries, ts) if u == users[i] and q == queries[i] and t <= ts[i])
        start = mine[-1]
        for t in reversed(mine[:-1]):
            if start - t > gap:
                break
            start = t
        out.append(start)
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("gap", [0, 5, 60, 10_000])
def test_session_starts_match_an_oracle(gap):
    rng = np.random.default_rng(gap)
    n = 300
    users = rng.integers(-1, 6, n)
    queries = rng.integers(0, 4, n)
    ts = rng.integers(0, 2_000, n)
    np.testing.assert_array_equal(session_starts(users, queries, ts, gap), _oracle(users, queries, ts, gap))


def test_a_purchase_history_excludes_its_own_session():
    """One user: an earlier search (product 7 clicked), then a search with click -> purchase of
    product 3 a minute apart. With sessions, the purchase's history holds product 7 only; without,
    it also holds its own click on product 3."""
    import pyarrow as pa

    from upper_fast import Featurizer, StringIdMap

    from _train_synthetic import tiny_config
    from upper_fast_train.features import Vocab, query_table

    log = pa.table({
        "timestamp": pa.array([1_000, 50_000, 50_060], pa.int64()),
        "user_id": ["u", "u", "u"],
        "query": ["old lamp", "ring", "ring"],
        "product_id": ["p7", "p3", "p3"],
        "interaction": ["click", "click", "purchase"],
    })
    ids = StringIdMap([f"p{i}" for i in range(10)])
    config = tiny_config()
    vocab = Vocab(countries=[], categories=[], quality_columns=[], quality_edges=[])
    featurizer = Featurizer()
    purchase = log.slice(2, 1)
    with_sessions = query_table(purchase, log, ids, {}, featurizer, vocab, None, config, session_gap_s=1800)
    without = query_table(purchase, log, ids, {}, featurizer, vocab, None, config, session_gap_s=0)
    assert [r for r in with_sessions.hist_items[0] if r >= 0] == [7]
    assert [r for r in without.hist_items[0] if r >= 0] == [3, 7]


def _shown_oracle(keys, ts, rows, impression, event, window):
    """Per event: the set of products of its search (latest impression time of its key <= its time,
    within the window), or an empty set."""
    out = []
    for e in event:
        cands = [t for i, t in enumerate(ts) if impression[i] and keys[i] == keys[e] and t <= ts[e] and ts[e] - t <= window]
        if not cands:
            out.append(set())
            continue
        t = max(cands)
        out.append({rows[i] for i in range(len(ts)) if impression[i] and keys[i] == keys[e] and ts[i] == t})
    return out


def test_shown_products_match_an_oracle():
    from upper_fast_train.features import shown_products

    rng = np.random.default_rng(3)
    n = 400
    keys = rng.integers(0, 6, n)
    ts = rng.integers(0, 50, n) * 100  # searches at multiples of 100 s
    rows = rng.integers(0, 30, n)
    impression = rng.random(n) < 0.7
    event = np.flatnonzero(~impression)
    # Events come 0-299 s after a search time; the window is 250 s, so some find no search.
    ev_time = ts.copy()
    ev_time[~impression] += rng.integers(0, 300, int((~impression).sum()))
    got = shown_products(keys, ev_time, rows, impression, event, 4, 250, seed=1)
    assert got.shape == (len(event), 4)
    expect = _shown_oracle(keys, ev_time, rows, impression, event, 250)
    for g, e in zip(got, expect):
        if e:
            assert set(g.tolist()) <= e and (g >= 0).all()
        else:
            assert (g == -1).all()
    assert any(e for e in expect) and any(not e for e in expect)
    np.testing.assert_array_equal(got, shown_products(keys, ev_time, rows, impression, event, 4, 250, seed=1))


def test_shown_negatives_config_defaults_and_errors():
    from upper_fast_train.config import TrainConfig

    assert TrainConfig().objective.shown_negatives == 4
    # A run trained before shown negatives existed resumes without them.
    assert TrainConfig.from_dict({"term_dim": 16, "term_vocab_size": 99}).objective.shown_negatives == 0
    assert TrainConfig.from_dict({"term_dim": 16}).objective.shown_negatives == 4
    for bad in ({"shown_negatives": -1}, {"shown_margin": -0.1}, {"shown_weight": -1.0}, {"shown_window_s": -5}):
        with pytest.raises(ValueError, match="shown_"):
            TrainConfig.from_flat(**bad)


def test_training_set_finds_each_engagements_own_search():
    """Two searches by one user for one query and a signed-out search: each engagement's shown
    products are the impressions of its own search, never its own product."""
    import pyarrow as pa

    from upper_fast import Featurizer, StringIdMap

    from _train_synthetic import tiny_config
    from upper_fast_train.features import Vocab, training_set

    log = pa.table({
        "timestamp": pa.array([100, 100, 130, 9_000, 9_000, 9_050, 20_000, 20_000, 20_100, 40_000], pa.int64()),
        "user_id": ["u", "u", "u", "u", "u", "u", None, None, None, "u"],
        "query": ["ring"] * 6 + ["lamp"] * 3 + ["ring"],
        "product_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p0"],
        "interaction": ["impression", "impression", "purchase", "impression", "impression", "click",
                        "impression", "impression", "click", "click"],
        "country": ["DE"] * 6 + ["US"] * 3 + ["DE"],
    })

    class DS:
        pass

    ds = DS()
    ds.log, ds.meta, ds.users = log, {"train_end": 50_000}, None
    ids = StringIdMap([f"p{i}" for i in range(10)])
    config = tiny_config(shown_negatives=3)
    vocab = Vocab(countries=["DE", "US"], categories=[], quality_columns=[], quality_edges=[])
    data = training_set(ds, ids, Featurizer(), vocab, None, config)
    assert data.shown_rows is not None and data.shown_rows.shape == (4, 3)
    by_product = {int(r): set(s.tolist()) for r, s in zip(data.product_rows, data.shown_rows)}
    assert by_product[3] <= {1, 2} and by_product[6] <= {4, 5} and by_product[9] <= {7, 8}
    assert by_product[0] == {-1}  # 31,000 s after the last "ring" search: outside the window
