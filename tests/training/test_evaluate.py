"""Evaluation: metric primitives against independent oracles, request building, baselines, judged data."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pyarrow as pa
import pytest

from upper_fast_train.evaluate import (
    Judgments,
    build_requests,
    evaluate_judged,
    evaluate_run,
    judged_metrics,
    personalization_tau,
    query_segments,
    request_metrics,
)
from upper_fast.data.dataset import Dataset, sort_log
from upper_fast.data.windows import Windows
from upper_fast.searches import SEARCH_GAP_S
from upper_fast_train.metrics import kendall_tau_b, ndcg_at_k, recall_at_k

TRAIN_END = 100


# ---------------------------------------------------------------- metric primitives

def test_recall_matches_set_oracle() -> None:
    rng = np.random.default_rng(0)
    m, K, n = 40, 12, 30
    retrieved = np.stack([rng.permutation(n)[:K] for _ in range(m)]).astype(np.int64)
    retrieved[::7, -3:] = -1  # padded lists
    relevant = [rng.choice(n, size=rng.integers(0, 5), replace=True).astype(np.int64) for _ in range(m)]
    got = recall_at_k(retrieved, relevant, (1, 5, 12))
    for i in range(m):
        rel = set(relevant[i].tolist())
        for j, k in enumerate((1, 5, 12)):
            if not rel:
                assert math.isnan(got[i, j])
            else:
                assert got[i, j] == pytest.approx(len(rel & set(retrieved[i, :k].tolist())) / len(rel))


def test_recall_hand_case_and_errors() -> None:
    retrieved = np.array([[3, 1, 4, -1]], dtype=np.int64)
    np.testing.assert_allclose(recall_at_k(retrieved, [np.array([4, 9, 4])], (2, 3, 4)), [[0.0, 0.5, 0.5]])
    with pytest.raises(TypeError, match="int64"):
        recall_at_k(retrieved.astype(np.int32), [np.array([1])], (1,))
    with pytest.raises(ValueError, match="every k"):
        recall_at_k(retrieved, [np.array([1])], (5,))


def _ndcg_oracle(ranked: list[int], judged: dict[int, float], k: int) -> float:
    dcg = sum(judged.get(r, 0.0) / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
    ideal = sorted(judged.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def test_ndcg_matches_oracle_and_hand_value() -> None:
    retrieved = np.array([[5, 2, 7]], dtype=np.int64)
    # gains 2 at row 2 and 1 at row 9: DCG = 2/log2(3); IDCG = 2 + 1/log2(3)
    got = ndcg_at_k(retrieved, [np.array([2, 9])], [np.array([2.0, 1.0])], 3)
    assert got[0] == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)))

    rng = np.random.default_rng(1)
    retrieved = np.stack([rng.permutation(20)[:10] for _ in range(25)]).astype(np.int64)
    rows = [rng.choice(20, size=rng.integers(1, 8), replace=False).astype(np.int64) for _ in range(25)]
    gains = [rng.uniform(0, 2, size=r.size) for r in rows]
    got = ndcg_at_k(retrieved, rows, gains, 10)
    for i in range(25):
        assert got[i] == pytest.approx(_ndcg_oracle(retrieved[i].tolist(), dict(zip(rows[i].tolist(), gains[i])), 10))


def test_kendall_tau_matches_scipy_with_ties() -> None:
    from scipy.stats import kendalltau

    rng = np.random.default_rng(2)
    for n in (2, 5, 31, 200):
        x = rng.integers(0, 6, size=n).astype(np.float64)
        y = x + rng.normal(0, 2, size=n).round()
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    assert kendall_tau_b(np.arange(5.0), np.arange(5.0)[::-1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b(np.ones(4), np.arange(4.0)))


# ---------------------------------------------------------------- requests and segments

def _dataset() -> types.SimpleNamespace:
    """Catalog p0..p5. Training traffic: 'mug' x6, 'scarf' x3, 'ring' x1 (engagements) + impressions.
    Eval window: u1 searches 'Mug' (purchase p0, click p1), u2 'mug' (purchase p2), signed-out 'ring'
    at two timestamps, u1 'lamp' (unseen) purchase p5, and an impression that is not an engagement."""
    catalog = pa.table(
        {
            "product_id": [f"p{i}" for i in range(6)],
            "title": ["blue ceramic mug", "mug with lid", "tea mug", "wool scarf", "garnet ring", "desk lamp"],
            "tags": [["kitchen"], [], ["tea"], ["winter"], ["jewelry"], ["light"]],
        }
    )
    rows = [(t, "u9", "mug", "p0", "click") for t in range(6)]
    rows += [(10 + t, "u8", "scarf", "p3", "purchase") for t in range(3)]
    rows += [(20, None, "ring", "p4", "click"), (21, "u9", "mug", "p1", "impression")]
    rows += [
        (TRAIN_END + 5, "u1", "Mug", "p1", "click"),
        (TRAIN_END + 1, "u1", "Mug", "p0", "purchase"),
        (TRAIN_END + 2, "u2", "mug", "p2", "purchase"),
        (TRAIN_END + 3, None, "ring", "p4", "purchase"),
        (TRAIN_END + 3, None, "ring", "p4", "click"),
        (TRAIN_END + 9 + SEARCH_GAP_S, None, "ring", "p3", "purchase"),  # a later search: past the gap
        (TRAIN_END + 4, "u1", "lamp", "p5", "purchase"),
        (TRAIN_END + 6, "u2", "scarf", "p3", "impression"),
    ]
    log = pa.table(
        {
            "timestamp": pa.array([r[0] for r in rows], pa.int64()),
            "user_id": pa.array([r[1] for r in rows], pa.string()),
            "query": [r[2] for r in rows],
            "product_id": [r[3] for r in rows],
            "interaction": [r[4] for r in rows],
        }
    )
    return Dataset(catalog=catalog, users=None, log=sort_log(log), quality_columns=[], report=None,
                   meta={"train_end": TRAIN_END, "simulated": True},
                   windows=Windows(TRAIN_END, TRAIN_END, "test fixture: no validation window"))


def _by_query_user(req) -> dict:
    users = req.events.column("user_id").to_pylist()
    stamps = req.events.column("timestamp").to_pylist()
    return {(q, u, None if u else t): i for i, (q, u, t) in enumerate(zip(req.events.column("query").to_pylist(), users, stamps))}


def test_build_requests_groups_the_eval_window() -> None:
    req = build_requests(_dataset())
    assert len(req) == 5  # (u1,Mug) (u2,mug) (anon,ring,@103) (anon,ring,@109) (u1,lamp)
    idx = _by_query_user(req)
    u1_mug = idx[("Mug", "u1", None)]
    assert req.events.column("timestamp")[u1_mug].as_py() == TRAIN_END + 1  # earliest event of the request
    assert req.relevant["purchase"][u1_mug].tolist() == [0]
    assert req.relevant["click"][u1_mug].tolist() == [1]
    anon = idx[("ring", None, TRAIN_END + 3)]
    assert req.relevant["purchase"][anon].tolist() == [4] and not req.signed_in[anon]
    assert req.signed_in[u1_mug]
    train_req = build_requests(_dataset(), window="train")
    assert len(train_req) == 3  # impressions are not engagements


def test_requests_are_searches() -> None:
    """One searcher (a user, or a country when signed out), one normalised query, gaps <= SEARCH_GAP_S."""
    ds = _dataset()
    extra = pa.table({"timestamp": pa.array([TRAIN_END + 9 + 2 * SEARCH_GAP_S, TRAIN_END + 10 + 2 * SEARCH_GAP_S], pa.int64()),
                      "user_id": pa.array([None, "u1"], pa.string()), "query": ["RING", "lamp"],
                      "product_id": ["p4", "p5"], "interaction": ["click", "purchase"]})
    ds = dataclasses.replace(ds, log=sort_log(pa.concat_tables([ds.log, extra])))
    req = build_requests(ds)
    # The signed-out 'RING' click joins the signed-out 'ring' search exactly SEARCH_GAP_S earlier (the
    # gap is inclusive); u1's
    # second 'lamp' purchase, 2 * SEARCH_GAP_S after the first, is a new search.
    assert len(req) == 6
    idx = _by_query_user(req)
    assert req.relevant["click"][idx[("ring", None, TRAIN_END + 9 + SEARCH_GAP_S)]].tolist() == [4]


def test_segments_split_training_traffic_in_thirds() -> None:
    # Training engagements: mug 6, scarf 3, ring 1 of 10: mug starts at 0 (head), scarf at 0.6 (torso),
    # ring at 0.9 (tail); lamp was never engaged in training.
    assert query_segments(_dataset(), ["mug", "scarf", "ring", "lamp"]) == ["head", "torso", "tail", "unseen"]


def test_request_metrics_by_segment_and_sign_in() -> None:
    ds = _dataset()
    req = build_requests(ds)
    idx = _by_query_user(req)
    retrieved = np.full((len(req), 2), -1, dtype=np.int64)
    retrieved[idx[("Mug", "u1", None)]] = [0, 1]  # purchase p0 found
    retrieved[idx[("mug", "u2", None)]] = [0, 1]  # purchase p2 missed
    retrieved[idx[("ring", None, TRAIN_END + 3)]] = [4, 3]  # found
    retrieved[idx[("ring", None, TRAIN_END + 9 + SEARCH_GAP_S)]] = [0, 1]  # p3 missed
    retrieved[idx[("lamp", "u1", None)]] = [5, 0]  # found
    m = request_metrics(retrieved, req, query_segments(ds, req.query_keys), (1, 2))
    assert m["purchase_recall@2"] == pytest.approx(3 / 5)
    assert m["purchase_recall@2/head"] == pytest.approx(1 / 2)
    assert m["purchase_recall@2/tail"] == pytest.approx(2 / 3)  # ring x2 + unseen lamp
    assert m["purchase_recall@2/unseen"] == pytest.approx(1.0)
    assert m["purchase_recall@2/signed_in"] == pytest.approx(2 / 3)
    assert m["purchase_recall@2/signed_out"] == pytest.approx(1 / 2)
    assert m["recall@2/click"] == pytest.approx(1.0)  # u1 clicked p1, anon ring clicked p4
    assert m["recall@1/click"] == pytest.approx(0.5)
    assert m["requests/purchase"] == 5 and math.isnan(m["recall@2/favorite"])


def test_personalization_tau_is_one_for_identical_users_and_lower_otherwise() -> None:
    rng = np.random.default_rng(3)
    products = rng.normal(size=(50, 8)).astype(np.float32)
    q = rng.normal(size=8).astype(np.float32)
    same = np.stack([q, q, q]).astype(np.float32)
    from upper_fast_train.metrics import exact_topk

    retrieved = exact_topk(same, products, 10)
    out = personalization_tau(same, products, retrieved, ["a"] * 3, ["u1", "u2", "u3"], k=10)
    assert out["kendall_tau_mean"] == pytest.approx(1.0) and out["personalization_pairs"] == 3
    diff = np.stack([q, -q]).astype(np.float32)
    out = personalization_tau(diff, products, exact_topk(diff, products, 10), ["a", "a"], ["u1", "u2"], k=10)
    assert out["kendall_tau_mean"] == pytest.approx(-1.0) and out["personalization_degree"] == pytest.approx(2.0)
    # Signed-out requests never form pairs.
    out = personalization_tau(same, products, retrieved, ["a"] * 3, [None, None, "u1"], k=10)
    assert out["personalization_pairs"] == 0


class _FixedVectorRun:
    """Test double of a TrainedRun: products and queries are encoded by fixed lookup tables, so the
    expected ranking is known by construction."""

    def __init__(self, product_vectors: np.ndarray, query_vectors: dict[str, np.ndarray]) -> None:
        self.product_vectors = product_vectors
        self.query_vectors = query_vectors
        self.seen_personalized: list[bool] = []

    def encode_products(self, catalog: pa.Table, batch_size: int = 512) -> np.ndarray:
        assert catalog.num_rows == self.product_vectors.shape[0]
        return self.product_vectors

    def event_query_inputs(self, events: pa.Table, dataset: object, personalized: bool = True) -> dict:
        self.seen_personalized.append(personalized)
        return {"query": np.asarray(events.column("query").to_pylist())}

    def encode_queries(self, inputs: dict, batch_size: int = 1024) -> np.ndarray:
        return np.stack([self.query_vectors[q.lower()] for q in inputs["query"]]).astype(np.float32)


def test_evaluate_run_end_to_end_on_a_known_ranking() -> None:
    ds = _dataset()
    eye = np.eye(6, dtype=np.float32)
    # 'mug' ranks p0 first, p2 last; 'ring' ranks p4 first then p3; 'lamp' p5.
    run = _FixedVectorRun(
        eye,
        {
            "mug": np.array([1, 0.9, 0, 0.1, 0.2, 0.3], np.float32),
            "ring": np.array([0, 0, 0, 0.5, 1, 0], np.float32),
            "lamp": np.array([0, 0, 0, 0, 0, 1], np.float32),
        },
    )
    m = evaluate_run(run, ds, ks=(1, 2), tau_k=2, progress=False, personalized=False)
    assert run.seen_personalized == [False]
    # purchases: u1 Mug p0 (rank 1), u2 mug p2 (rank 6), ring@103 p4 (rank 1), ring@109 p3 (rank 2), lamp p5 (1)
    assert m["purchase_recall@1"] == pytest.approx(3 / 5)
    assert m["purchase_recall@2"] == pytest.approx(4 / 5)
    assert m["simulated"] == 1.0
    # u1 and u2 share 'mug' with the same vector: their rankings agree exactly.
    assert m["kendall_tau_mean"] == pytest.approx(1.0) and m["personalization_pairs"] == 1


def test_bm25_baseline_finds_lexical_matches() -> None:
    from upper_fast_train.baselines import bm25_baseline, bm25_topk

    top = bm25_topk(["blue ceramic mug", "wool scarf", "garnet ring"], ["scarf", "the of"], k=3)
    assert top[0, 0] == 1 and (top[0, 1:] == -1).all()  # only the matching product is retrieved
    assert (top[1] == -1).all()  # a query of stopwords only matches nothing
    m = bm25_baseline(_dataset(), ks=(1, 3), progress=False)
    # 'ring' -> p4 only ('garnet ring'): found for ring@103, p3 missed at ring@109; 'lamp' -> p5 found.
    assert m["purchase_recall@3/tail"] == pytest.approx(2 / 3)
    assert m["purchase_recall@3/unseen"] == pytest.approx(1.0)
    assert 0.0 <= m["purchase_recall@1"] <= m["purchase_recall@3"] <= 1.0
    assert m["simulated"] == 1.0


# ---------------------------------------------------------------- judged data

def _judged() -> tuple[pa.Table, pa.Table]:
    catalog = pa.table({"product_id": ["a", "b", "c", "d"], "title": ["x", "y", "z", "w"]})
    table = pa.table(
        {
            "query": ["q1", "q1", "q1", "q2", "q2"],
            "product_id": ["a", "b", "c", "d", "a"],
            "relevance": [3.0, 2.0, 2.67, 1.0, 2.33],
        }
    )
    return catalog, table


def test_judged_metrics_follow_the_shared_data_conventions() -> None:
    catalog, table = _judged()
    j = Judgments.from_table(table, catalog.column("product_id"))
    assert j.queries == ["q1", "q2"] and j.rows[0].tolist() == [0, 1, 2]
    retrieved = np.array([[1, 0, 3, 2], [0, 1, 2, 3]], dtype=np.int64)
    m = judged_metrics(retrieved, j, ks=(1, 2, 4), ndcg_k=2)
    # q1 relevant (>= 2.5): a, c. q2 has none (skipped for recall).
    assert m["R@1"] == 0.0 and m["R@2"] == pytest.approx(0.5) and m["R@4"] == pytest.approx(1.0)
    assert m["queries_with_relevant"] == 1
    # gains = relevance - 1. q1: retrieved b (1.0), a (2.0); ideal a (2.0), c (1.67).
    ndcg_q1 = (1.0 + 2.0 / math.log2(3)) / (2.0 + 1.67 / math.log2(3))
    ndcg_q2 = 1.33 / (1.33 + 0.0)  # a (1.33) first; d has gain 0
    assert m["nDCG@2"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)


def test_evaluate_judged_retrieves_by_inner_product() -> None:
    catalog, table = _judged()
    j = Judgments.from_table(table, catalog.column("product_id"))
    products = np.eye(4, dtype=np.float32)
    table_q = {"q1": [0.9, 0.1, 1.0, 0.0], "q2": [1.0, 0.0, 0.0, 0.5]}

    def encode(queries: list[str]) -> np.ndarray:
        return np.asarray([table_q[q] for q in queries], dtype=np.float32)

    m = evaluate_judged(encode, products, j, ks=(1, 2), ndcg_k=2)
    assert m["R@1"] == pytest.approx(0.5) and m["R@2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the catalogue"):
        Judgments.from_table(table, pa.array(["a", "b"]))
    with pytest.raises(TypeError, match="float32"):
        evaluate_judged(lambda qs: np.zeros((len(qs), 4)), products, j)


@pytest.mark.realdata
def test_bm25_on_a_home_depot_dev_subset(shared_data) -> None:
    from upper_fast_train.realdata import load_homedepot
    from upper_fast_train.baselines import bm25_judged
    from upper_fast_train.text import product_texts

    dataset, judged_table = load_homedepot(shared_data / "homedepot", "dev")
    judged = Judgments.from_table(judged_table, dataset.catalog.column("product_id")).subset(200, seed=0)
    m = bm25_judged(product_texts(dataset.catalog), judged, progress=False)
    # Lexical retrieval over 54,667 real titles: far above chance (R@100 by chance ~ 0.002).
    assert m["queries"] == 200
    assert 0.25 < m["R@10"] <= m["R@100"] <= m["R@1000"] <= 1.0
    assert m["R@100"] > 0.5 and 0.15 < m["nDCG@10"] < 0.6


def test_eval_command_is_registered() -> None:
    from upper_fast.cli import build_parser

    args = build_parser().parse_args(["eval", "some_run", "--homedepot", "--json", "--ks", "10", "100"])
    assert args.command == "eval" and args.json and args.ks == [10, 100]
    assert str(args.homedepot) == "../shared/data/homedepot" and args.data is None
    assert callable(args.func)
