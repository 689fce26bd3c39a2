"""Graph embeddings: the engagement graph, the walks, and the trained vectors."""

from __future__ import annotations

import types

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("gensim", reason="graph embeddings need the [train] extra (gensim)")

from upper_fast_train.graph import (  # noqa: E402
    GraphEmbeddings,
    build_engagement_graph,
    product_words,
    random_walks,
    train_graph_embeddings,
)

TRAIN_END = 1_000


def _two_cluster_dataset(seed: int = 0) -> types.SimpleNamespace:
    """Queries 0-4 engage only products 0-9, queries 5-9 only products 10-19; product 25 and
    'Late Query' are engaged only after TRAIN_END; products 20-29 otherwise never engaged."""
    rng = np.random.default_rng(seed)
    n_products = 30
    catalog = pa.table(
        {"product_id": [f"p{i}" for i in range(n_products)], "title": [f"item {i}" for i in range(n_products)]}
    )
    ts, queries, products, kinds = [], [], [], []
    for i in range(600):
        cluster = i % 2
        ts.append(i)
        queries.append(f"  Query {int(rng.integers(5)) + 5 * cluster} ")
        products.append(f"p{int(rng.integers(10)) + 10 * cluster}")
        kinds.append(("click", "purchase", "impression", "favorite")[i % 4])
    for t in (TRAIN_END, TRAIN_END + 5):
        ts.append(t)
        queries.append("Late Query")
        products.append("p25")
        kinds.append("purchase")
    log = pa.table(
        {
            "timestamp": pa.array(ts, pa.int64()),
            "user_id": pa.array([None] * len(ts), pa.string()),
            "query": queries,
            "product_id": products,
            "interaction": kinds,
        }
    )
    return types.SimpleNamespace(catalog=catalog, log=log, users=None, meta={"train_end": TRAIN_END})


def test_graph_sums_weights_and_drops_non_edges() -> None:
    g = build_engagement_graph(
        ["a", "a", "b", "a", "", "b"],
        np.array([0, 0, 1, 2, 3, -1], dtype=np.int64),
        ["click", "purchase", "favorite", "impression", "purchase", "purchase"],
    )
    assert g.query_keys == ["a", "b"]
    assert g.product_rows.tolist() == [0, 1]  # row 2 only had an impression, row 3 an empty query
    dense = np.zeros((g.n_nodes, g.n_nodes))
    for node in range(g.n_nodes):
        for j in range(g.indptr[node], g.indptr[node + 1]):
            dense[node, g.indices[j]] = g.weights[j]
    expected = np.zeros((4, 4))
    expected[0, 2] = expected[2, 0] = 1 + 5  # a-row0: click + purchase
    expected[1, 3] = expected[3, 1] = 2  # b-row1: favorite
    np.testing.assert_array_equal(dense, expected)


def test_word_side_nodes_link_products_that_share_a_word() -> None:
    catalog = pa.table({"product_id": ["p0", "p1", "p2"], "title": ["Boho Ring", "boho  necklace", "Rustic ring"],
                        "tags": [["boho"], None, []]})
    rows, keys, weights = product_words(catalog, 0.5)
    assert list(zip(rows.tolist(), keys)) == [(0, "boho"), (0, "ring"), (1, "boho"), (1, "necklace"), (2, "ring"), (2, "rustic")]
    assert weights.tolist() == [0.5] * 6  # "boho" twice in p0 (title and tag) is one edge
    g = build_engagement_graph(["q"], np.array([0], dtype=np.int64), ["click"], side=(rows, keys, weights))
    # nodes: query q, products 0,1,2 (1 and 2 only through words), words boho, necklace, ring, rustic
    assert g.query_keys == ["q"] and g.product_rows.tolist() == [0, 1, 2] and g.n_side == 4 and g.n_nodes == 8
    dense = np.zeros((g.n_nodes, g.n_nodes))
    for node in range(g.n_nodes):
        dense[node, g.indices[g.indptr[node]:g.indptr[node + 1]]] = g.weights[g.indptr[node]:g.indptr[node + 1]]
    np.testing.assert_array_equal(dense, dense.T)
    boho, ring = 4, 6
    assert dense[0, 1] == 1.0 and dense[1, boho] == dense[2, boho] == 0.5 and dense[1, ring] == dense[3, ring] == 0.5
    assert dense[3, boho] == 0 and dense[0, boho] == 0  # words touch products only
    with pytest.raises(ValueError, match="side edges"):
        build_engagement_graph(["q"], np.array([0], dtype=np.int64), ["click"], side=(rows, keys[:-1], weights))


def test_word_weight_gives_every_catalog_product_a_vector() -> None:
    ds = _two_cluster_dataset()
    plain = train_graph_embeddings(ds, TRAIN_END, dim=8, walks_per_node=2, walk_length=6, epochs=1, progress=False, workers=1)
    words = train_graph_embeddings(ds, TRAIN_END, dim=8, walks_per_node=2, walk_length=6, epochs=1, progress=False,
                                   workers=1, word_weight=1.0)
    assert not plain.product_mask[20:].any() and words.product_mask.all()
    assert plain.query_keys == words.query_keys
    np.testing.assert_allclose(np.linalg.norm(words.product_vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="word_weight"):
        train_graph_embeddings(ds, TRAIN_END, dim=8, progress=False, word_weight=-1.0)


def test_walks_follow_edges_in_proportion_to_weight() -> None:
    # Query node 0 links product nodes 1 (weight 1) and 2 (weight 3).
    g = build_engagement_graph(["q", "q"], np.array([10, 20], dtype=np.int64), ["click", "add_to_cart"])
    walks = random_walks(g, walks_per_node=4000, walk_length=3, seed=1)
    assert walks.shape == (3 * 4000, 3)
    neighbours = {n: set(g.indices[g.indptr[n] : g.indptr[n + 1]].tolist()) for n in range(g.n_nodes)}
    for a, b in zip(walks[:, :-1].ravel(), walks[:, 1:].ravel()):
        assert b in neighbours[a]
    from_query = walks[walks[:, 0] == 0, 1]
    assert abs(np.mean(from_query == 2) - 0.75) < 0.03


def test_co_engaged_nodes_are_closer_than_random_and_window_is_respected() -> None:
    from upper_fast import Featurizer

    ds = _two_cluster_dataset()
    emb = train_graph_embeddings(ds, TRAIN_END, dim=16, workers=1, epochs=5, progress=False)
    assert emb.product_vectors.dtype == np.float32 and emb.product_vectors.shape == (30, 16)
    np.testing.assert_array_equal(emb.product_mask, np.arange(30) < 20)  # p25 only engaged after train_end
    assert not emb.product_vectors[20:].any()
    np.testing.assert_allclose(np.linalg.norm(emb.product_vectors[:20], axis=1), 1.0, rtol=1e-5)
    featurizer = Featurizer()
    assert sorted(emb.query_keys) == sorted({featurizer.query_key(f"Query {i}") for i in range(10)})
    assert featurizer.query_key("Late Query") not in emb.query_keys

    sims = emb.product_vectors[:20] @ emb.product_vectors[:20].T
    within = (sims[:10, :10].sum() - 10 + sims[10:, 10:].sum() - 10) / 180
    across = sims[:10, 10:].mean()
    assert within > across + 0.3
    qv, mask = emb.lookup_queries([featurizer.query_key("Query 1"), featurizer.query_key("Query 7")])
    assert mask.tolist() == [1.0, 1.0]
    # A query sits closer to the products it led to than to the other cluster's.
    assert (qv[0] @ emb.product_vectors[:10].T).mean() > (qv[0] @ emb.product_vectors[10:20].T).mean() + 0.3
    assert (qv[1] @ emb.product_vectors[10:20].T).mean() > (qv[1] @ emb.product_vectors[:10].T).mean() + 0.3


def test_deterministic_with_one_worker_and_save_load_round_trip(tmp_path) -> None:
    ds = _two_cluster_dataset()
    a = train_graph_embeddings(ds, TRAIN_END, dim=8, workers=1, epochs=2, progress=False, seed=3)
    b = train_graph_embeddings(ds, TRAIN_END, dim=8, workers=1, epochs=2, progress=False, seed=3)
    c = train_graph_embeddings(ds, TRAIN_END, dim=8, workers=1, epochs=2, progress=False, seed=4)
    np.testing.assert_array_equal(a.product_vectors, b.product_vectors)
    np.testing.assert_array_equal(a.query_vectors, b.query_vectors)
    assert not np.array_equal(a.product_vectors, c.product_vectors)

    a.save(tmp_path / "graph.npz")
    loaded = GraphEmbeddings.load(tmp_path / "graph.npz")
    assert loaded.query_keys == a.query_keys
    np.testing.assert_array_equal(loaded.query_vectors, a.query_vectors)
    np.testing.assert_array_equal(loaded.product_vectors, a.product_vectors)
    np.testing.assert_array_equal(loaded.product_mask, a.product_mask)


def test_graph_embeddings_validate_arrays() -> None:
    with pytest.raises(TypeError, match="float32"):
        GraphEmbeddings(["a"], np.zeros((1, 4)), np.zeros((2, 4), np.float32), np.zeros(2, bool))
    with pytest.raises(ValueError, match="query_keys"):
        GraphEmbeddings(["a", "b"], np.zeros((1, 4), np.float32), np.zeros((2, 4), np.float32), np.zeros(2, bool))
