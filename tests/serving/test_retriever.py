import numpy as np
import pytest
import torch

import upper_fast
from upper_fast import Retriever, UserContext
from upper_fast.featurizer import Featurizer, FeaturizerConfig
from serve_tiny import COUNTRIES, FEATURIZER, G, L, M, N, THRESHOLDS, tiny_bundle

SCALE = 0.1
WEIGHTS = (0.5, -0.25)


@pytest.fixture(scope="module", params=["whole", "split", "split-i8"])
def world(request, tmp_path_factory):
    """Every test runs on a bundle with the whole tower only, on one with the split tower (the
    user-vector cache path) and on an i8-index one (walk in i8, candidates re-ranked in float32:
    scores must still match the float32 oracle to 1e-4), each against the torch oracle."""
    return tiny_bundle(tmp_path_factory.mktemp("r"), weights=WEIGHTS, scale=SCALE, split=request.param != "whole",
                       index_dtype="i8" if request.param.endswith("i8") else "f32")


@pytest.fixture(scope="module")
def retriever(world):
    return Retriever.load(world[0])


def oracle_inputs(world, query, rows=(), types=(), queries=(), country=0):
    """The ONNX inputs built by hand from the bundle contract (history most recent first, left-aligned)."""
    _, _, w = world
    fz = Featurizer(FeaturizerConfig(**FEATURIZER))
    x = {"query_terms": fz.featurize([query], L), "query_graph": np.zeros((1, G), np.float32),
         "query_graph_mask": np.zeros(1, np.float32), "hist_item_graph": np.zeros((1, N, G), np.float32),
         "hist_item_type": np.zeros((1, N), np.int64), "hist_query_terms": np.zeros((1, M, L), np.int64),
         "user_country": np.array([country], np.int64)}
    key = fz.normalize(query)
    if key in w["query_keys"]:
        x["query_graph"][0] = w["query_graph"][w["query_keys"].index(key)]
        x["query_graph_mask"][0] = 1.0
    rows, types, queries = list(rows)[:N], list(types)[:N], list(queries)[:M]
    for i, (r, t) in enumerate(zip(rows, types)):
        x["hist_item_graph"][0, i] = w["product_graph"][r]
        x["hist_item_type"][0, i] = t
    if queries:
        x["hist_query_terms"][0, : len(queries)] = fz.featurize(queries, L)
    return x


def oracle_search(world, inputs, k):
    _, tower, w = world
    with torch.no_grad():
        q = tower(**{k_: torch.from_numpy(v) for k_, v in inputs.items()}).numpy()[0]
    cos = w["product_vectors"] @ q
    score = cos + SCALE * (w["quality"] @ np.array(WEIGHTS, np.float32))
    order = np.argsort(-score, kind="stable")[:k]
    return order, score[order], cos[order]


def check_against_oracle(res, world, inputs, k):
    rows, score, cos = oracle_search(world, inputs, k)
    keep = cos >= THRESHOLDS["negative"]
    assert res.count == keep.sum()
    # Tiny catalogue, ef >= k: the ANN result is the exact top-k (ties aside).
    assert len(set(res.rows.tolist()) ^ set(rows[keep].tolist())) <= 2
    np.testing.assert_allclose(res.scores, score[keep][: res.count], atol=1e-4)
    np.testing.assert_allclose(res.cosines, cos[keep][: res.count], atol=1e-4)
    assert (np.diff(res.scores) <= 1e-6).all()


def test_signed_out_seen_and_unseen_queries(world, retriever):
    seen = world[2]["query_keys"][0]
    for query in (seen, "Totally unseen QUERY words", ""):
        res = retriever.search(query, k=50)
        check_against_oracle(res, world, oracle_inputs(world, query), 50)
        assert res.product_ids == [world[2]["product_ids"][r] for r in res.rows]


def test_known_user_uses_history_and_country(world, retriever):
    users = world[2]["users"].to_pylist()
    u = next(u for u in users if len(u["hist_rows"]) >= 2 and u["hist_queries"])
    res = retriever.search("red mug", user=u["user_id"], k=40)
    inputs = oracle_inputs(world, "red mug", u["hist_rows"], u["hist_types"], u["hist_queries"], u["country"])
    check_against_oracle(res, world, inputs, 40)
    signed_out = retriever.search("red mug", k=40)
    assert res.rows.tolist() != signed_out.rows.tolist()


def test_unknown_user_equals_signed_out(retriever):
    a = retriever.search("blue lamp", user="nobody-like-this", k=30)
    b = retriever.search("blue lamp", k=30)
    assert a.rows.tolist() == b.rows.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)


def test_explicit_context(world, retriever):
    pids = world[2]["product_ids"]
    ctx = UserContext(recent_products=[(pids[3], "purchase"), ("no-such-product", 1), (pids[7], 2)],
                      recent_queries=["oak chair"], country="FR")
    res = retriever.search("gift", user=ctx, k=25)
    # Context lists are oldest first; the tower sees most recent first.
    inputs = oracle_inputs(world, "gift", [7, 3], [2, 4], ["oak chair"], COUNTRIES.index("FR") + 1)
    check_against_oracle(res, world, inputs, 25)
    assert retriever.search("gift", user=UserContext(), k=25).rows.tolist() == retriever.search("gift", k=25).rows.tolist()
    with pytest.raises(ValueError, match="interaction"):
        retriever.search("gift", user=UserContext(recent_products=[(pids[0], "like")]))


def test_tiers_and_min_tier(world, retriever):
    res = retriever.search("vintage ring", k=300, prune=False)
    assert res.count == 300
    th = np.array([THRESHOLDS[t] for t in ("click", "favorite", "add_to_cart", "purchase")])
    expect = np.array([max([i + 1 for i in range(4) if c >= th[i]], default=0) for c in res.cosines])
    np.testing.assert_array_equal(res.tiers, expect)
    strict = retriever.search("vintage ring", k=300, min_tier=2)
    assert (strict.tiers >= 2).all() and (strict.cosines >= THRESHOLDS["favorite"]).all()
    assert strict.count == (expect >= 2).sum()
    hits = list(strict)
    assert hits and hits[0].tier_name in ("favorite", "add_to_cart", "purchase")


def test_filters(world, retriever):
    pids = world[2]["product_ids"]
    allowed = pids[10:40]
    res = retriever.search("wool", k=10, filter=allowed, prune=False)
    assert res.count == 10 and set(res.product_ids) <= set(allowed)
    everything = retriever.search("wool", k=300, prune=False)
    best_allowed = [p for p in everything.product_ids if p in set(allowed)][:10]
    assert res.product_ids == best_allowed
    mask = np.zeros(len(pids), bool)
    mask[::3] = True
    res2 = retriever.search("wool", k=15, filter=mask, prune=False)
    assert res2.count == 15 and all(pids.index(p) % 3 == 0 for p in res2.product_ids)
    assert retriever.search("wool", filter=[]).count == 0
    with pytest.raises(ValueError, match="shape"):
        retriever.search("wool", filter=np.ones(3, bool))
    with pytest.raises(TypeError):
        retriever.search("wool", filter="P00001")


def test_k_larger_than_catalogue_and_bad_args(retriever):
    res = retriever.search("oak", k=10_000, prune=False)
    assert res.count == retriever.num_products
    assert len(set(res.product_ids)) == res.count
    with pytest.raises(ValueError):
        retriever.search("oak", k=0)
    with pytest.raises(TypeError):
        retriever.search(b"oak")
    with pytest.raises(TypeError):
        retriever.search("oak", user=42)


def test_search_batch_matches_single(world, retriever):
    users = [None, "u1", UserContext(recent_queries=["red mug"]), "unknown"]
    queries = ["red mug", "oak chair", "gift", "blue"]
    batch = retriever.search_batch(queries, users, k=20)
    for q, u, r in zip(queries, users, batch):
        single = retriever.search(q, user=u, k=20)
        assert r.rows.tolist() == single.rows.tolist()
        np.testing.assert_allclose(r.scores, single.scores, atol=1e-5)
    with pytest.raises(ValueError, match="users"):
        retriever.search_batch(queries, [None], k=5)
    assert retriever.search_batch([], k=5) == []


def test_stage_timings_are_reported(retriever):
    t = retriever.stage_timings("red mug", repeats=20)
    assert set(t) == {"inputs", "onnx", "hydrate", "ann", "prune", "total"}
    assert t["total"] >= t["onnx"] > 0


def test_stages_one_by_one_give_the_search(world, retriever):
    st = retriever.stages()
    user = next(u["user_id"] for u in world[2]["users"].to_pylist() if len(u["hist_rows"]) >= 2)
    for query, who in (("red mug", None), ("wool scarf", user)):
        buf = st.buffers(1)
        st.fill(buf, [query], [who])
        q = st.run_tower(buf).copy()
        ids, scores = st.ann(st.hydrate(buf, q), 10)
        staged = st.prune(ids[0], scores[0], 10, 0, True)
        direct = retriever.search(query, user=who, k=10, lexical=False)
        assert staged.product_ids == direct.product_ids
        np.testing.assert_allclose(staged.scores, direct.scores, rtol=1e-6, atol=1e-7)
    assert len(st.product_ids) == retriever.num_products and st.boost.shape == (retriever.num_products,)
    if st.has_split_tower:
        st.fill_inputs(buf, 0, "red mug", None)
        assert st.run_user_tower(buf).shape[0] == 1
    else:
        with pytest.raises(ValueError, match="split tower"):
            st.run_user_tower(buf)
    ef = retriever.ef
    retriever.ef = 64
    assert retriever.ef == 64
    with pytest.raises(ValueError, match="ef must be"):
        retriever.ef = 0
    retriever.ef = ef


def test_missing_bundle(tmp_path):
    with pytest.raises(FileNotFoundError):
        Retriever.load(tmp_path / "absent")
    with pytest.raises(ValueError):
        Retriever.load(tmp_path, num_threads=0)


def test_filter_matches_full_ranking(world, retriever):
    pids = world[2]["product_ids"]
    allowed = pids[::7]
    res = retriever.search("lamp", k=8, filter=allowed, prune=False)
    full = retriever.search("lamp", k=300, prune=False)
    assert res.product_ids == [p for p in full.product_ids if p in set(allowed)][:8]


def test_user_vector_cache(world, tmp_path):
    """Split bundles: a user's vector is computed once and reused (LRU keyed by user id, or by the
    resolved history for a context); results equal the whole tower's (user_cache=0) on every path."""
    path = world[0]
    r = Retriever.load(path)
    whole = Retriever.load(path, user_cache=0)
    assert whole.user_cache_info() is None
    if not (path / "user_tower.onnx").exists():
        assert r.user_cache_info() is None
        return
    assert r._state.query_session is not None and r._state.signed_out is not None
    pids = world[2]["product_ids"]
    ctx = UserContext(recent_products=[(pids[3], "purchase"), (pids[7], 2)], recent_queries=["oak chair"], country="FR")
    cases = [("red mug", "u1"), ("red mug", "u1"), ("gift", "u2"), ("oak", None), ("oak", "nobody"),
             ("lamp", ctx), ("wool", ctx), ("lamp", ("u3", ctx)), ("lamp", UserContext(country="DE"))]
    base = r.user_cache_info()
    for q, u in cases:
        a, b = r.search(q, user=u, k=30), whole.search(q, user=u, k=30)
        assert a.rows.tolist() == b.rows.tolist(), (q, u)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    info = r.user_cache_info()
    # Misses: u1, u2, ctx, (u3, ctx), DE-context; hits: the second u1 and the second ctx. Signed-out
    # and unknown ids never touch the cache.
    assert info["misses"] - base["misses"] == 5 and info["hits"] - base["hits"] == 2
    assert info["size"] == base["size"] + 5
    small = Retriever.load(path, user_cache=2)
    for u in ("u1", "u2", "u3", "u1"):
        small.search("gift", user=u, k=5)
    assert small.user_cache_info() == {"size": 2, "capacity": 2, "hits": 0, "misses": 4 + base["misses"]}
    with pytest.raises(ValueError, match="user_cache"):
        Retriever.load(path, user_cache=-1)


def test_rerank_of_compact_indexes(world):
    """bf16/i8 bundles re-rank the walk's candidates on the float32 vectors by default (scores are
    exact); rerank=False returns the compact storage's own scores; f32 bundles never re-rank."""
    path, _, w = world
    r = Retriever.load(path)
    exact_boost = SCALE * (w["quality"] @ np.array(WEIGHTS, np.float32))
    compact = r._state.index.dtype != "f32"
    assert (r._state.rerank_vectors is not None) == compact
    res = r.search("red mug", user="u1", k=40, prune=False)
    raw = Retriever.load(path, rerank=False)
    other = raw.search("red mug", user="u1", k=40, prune=False)
    assert raw._state.rerank_vectors is None
    if compact:
        # Re-ranked: every score is <q, v> + boost in float32 for the returned row (the i8 walk's own
        # scores carry quantisation error well above 1e-5).
        cos = res.scores - exact_boost[res.rows]
        np.testing.assert_allclose(res.cosines, cos, atol=1e-6)
        assert np.abs(np.sort(res.scores)[::-1] - res.scores).max() == 0.0
        assert np.abs(other.scores - res.scores[: other.count]).max() > 1e-5 or other.rows.tolist() != res.rows.tolist()
    else:
        assert res.rows.tolist() == other.rows.tolist()
    with pytest.raises(TypeError, match="rerank"):
        Retriever.load(path, rerank="yes")
