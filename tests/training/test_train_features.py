"""Training histories stop before the event's search: a purchase never sees its own click."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

def test_a_purchase_history_excludes_its_own_session():
    """One user: an earlier search (product 7 clicked), then a search with click -> purchase of
    product 3 a minute apart. At the search's start, the purchase's history holds product 7 only; at
    its own timestamp, it would also hold its own click on product 3."""
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
    with_sessions = query_table(purchase, log, ids, {}, featurizer, vocab, None, config, at_search_start=True)
    without = query_table(purchase, log, ids, {}, featurizer, vocab, None, config, at_search_start=False)
    assert [r for r in with_sessions.hist_items[0] if r >= 0] == [7]
    assert [r for r in without.hist_items[0] if r >= 0] == [3, 7]


def test_shown_products_match_an_oracle():
    from upper_fast_train.features import shown_products

    rng = np.random.default_rng(3)
    n = 400
    search = rng.integers(0, 250, n)
    rows = rng.integers(0, 30, n)
    impression = rng.random(n) < 0.6
    event = np.flatnonzero(~impression)
    got = shown_products(search, rows, impression, event, 4, seed=1)
    assert got.shape == (len(event), 4)
    expect = [{rows[i] for i in range(n) if impression[i] and search[i] == search[e]} for e in event]
    for g, e in zip(got, expect):
        if e:
            assert set(g.tolist()) <= e and (g >= 0).all()
        else:
            assert (g == -1).all()
    assert any(e for e in expect) and any(not e for e in expect)
    np.testing.assert_array_equal(got, shown_products(search, rows, impression, event, 4, seed=1))


def test_shown_negatives_config_defaults_and_errors():
    from upper_fast_train.config import TrainConfig

    assert TrainConfig().objective.shown_negatives == 4
    # A run trained before shown negatives existed resumes without them.
    assert TrainConfig.from_dict({"term_dim": 16, "term_vocab_size": 99}).objective.shown_negatives == 0
    assert TrainConfig.from_dict({"term_dim": 16}).objective.shown_negatives == 4
    for bad in ({"shown_negatives": -1}, {"shown_margin": -0.1}, {"shown_weight": -1.0}):
        with pytest.raises(ValueError, match="shown_"):
            TrainConfig.from_flat(**bad)
    # The search window is defined once (upper_fast.searches), not per config; old configs still load.
    with pytest.raises(ValueError, match="defined once"):
        TrainConfig.from_flat(shown_window_s=60)
    old = TrainConfig().to_dict()
    old["objective"]["shown_window_s"] = 7200
    old["examples"]["history_session_gap_s"] = 1800
    assert TrainConfig.from_dict(old) == TrainConfig()


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
    assert by_product[0] == {-1}  # 31,000 s after the last "ring" search: a search of its own, nothing shown


def test_no_example_sees_its_target_unless_a_served_search_would(tmp_path):
    """Every training example's history is exactly what a served search at that search's start would
    see: the searcher's engagements strictly before the search began (upper_fast.searches)."""
    from upper_fast import Featurizer, StringIdMap
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate
    from upper_fast.searches import search_ids, searcher_codes

    from _train_synthetic import tiny_config
    from upper_fast_train.features import Vocab, training_set

    generate(tmp_path, seed=4, n_products=150, n_users=30, n_queries=25, n_events=4000, progress=False)
    ds = load_dataset(tmp_path, progress=False)
    catalog = [str(p) for p in ds.catalog.column("product_id").to_pylist()]
    ids = StringIdMap(catalog)
    config = tiny_config(shown_negatives=0)
    vocab = Vocab(countries=[], categories=[], quality_columns=[], quality_edges=[])
    featurizer = Featurizer()
    data = training_set(ds, ids, featurizer, vocab, None, config)
    window = ds.window("train")
    keep = np.asarray([x != "impression" for x in window.column("interaction").to_pylist()])
    users = window.column("user_id").to_pylist()
    ts = window.column("timestamp").to_numpy()
    rows = ids.lookup([str(p) for p in window.column("product_id").to_pylist()])
    searchers, _ = searcher_codes(users, window.column("country").to_pylist())
    _, qcodes = np.unique(featurizer.query_keys([q or "" for q in window.column("query").to_pylist()]), return_inverse=True)
    _, start = search_ids(searchers, qcodes, ts)
    engaged = np.flatnonzero(keep & (rows >= 0))
    n_items = config.model.history_items
    own_seen = 0
    for example, i in enumerate(engaged.tolist()):
        got = [r for r in data.queries.hist_items[example].tolist() if r >= 0]
        if users[i] is None:
            assert got == []
            continue
        before = [j for j in engaged.tolist() if users[j] == users[i] and ts[j] < start[i]]
        expect = [int(rows[j]) for j in sorted(before, key=lambda j: (ts[j], j), reverse=True)][:n_items]
        assert got == expect, example
        own_seen += int(rows[i]) in got
    assert own_seen > 0  # re-buys after an earlier search do see the product, as a service would
