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
