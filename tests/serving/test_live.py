"""The live catalogue (upsert / remove / save) and live user events (observe) of the Retriever."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from live_tiny import QUALITY, live_bundle, tiny_catalog
from serve_tiny import N, tiny_bundle

from upper_fast import Retriever, UserContext
from upper_fast.bundle import verify_bundle
from upper_fast.data.validate import CatalogRowsError
from upper_fast.products import ProductEncoder, quality_columns_of, quality_features

QUERIES = ["red mug", "oak chair gift", "vintage silver ring", "blue wool lamp"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from upper_fast.lexical import catalogue_texts

    tmp = tmp_path_factory.mktemp("live")
    path, world = live_bundle(tmp, lexical_texts=catalogue_texts(tiny_catalog(200)))
    return path, world


def _results(retriever, user=None, k=50):
    return [retriever.search(q, user=user, k=k, prune=False) for q in QUERIES]


def _same(a, b) -> bool:
    return all(x.product_ids == y.product_ids and np.array_equal(x.scores, y.scores) for x, y in zip(a, b))


def _new_rows(n: int, seed: int = 7, prefix: str = "NEW"):
    return tiny_catalog(n, seed=seed, prefix=prefix).to_pylist()


def test_bundle_carries_the_product_tower_with_its_parity(bundle):
    path, _ = bundle
    manifest = verify_bundle(path)
    for name in ("product_tower.onnx", "tokenizer.json", "product_features.json"):
        assert name in manifest["files"]
    assert manifest["product_tower_parity_max_abs"] < 1e-4
    features = json.loads((path / "product_features.json").read_text())
    assert features["quality_buckets"]["columns"] == ["price", *QUALITY]


def test_upserting_a_catalogue_row_again_reproduces_its_exported_vector(bundle):
    path, world = bundle
    retriever = Retriever.load(path)
    before = _results(retriever)
    row = world["catalog"].slice(3, 1).to_pylist()
    report = retriever.upsert_products(row)
    assert report["added"] == 0 and report["replaced"] == 1
    assert set(report["timings_ms"]) == {"validate", "encode", "hydrate", "apply"}
    live = retriever._state.live
    # serving featurization + ONNX, with the product's graph node kept == export's torch vector
    assert np.abs(live.replaced_vectors[3] - world["vectors"][3]).max() < 1e-5
    # the same quality features and boost as export gave it (one shared function)
    assert np.array_equal(live.replaced_quality[3], np.load(path / "quality.npy")[3])
    after = _results(retriever)
    assert [r.product_ids for r in after] == [r.product_ids for r in before]


def test_a_new_product_is_searchable_through_the_cold_path(bundle):
    path, world = bundle
    retriever = Retriever.load(path)
    rows = _new_rows(2)
    report = retriever.upsert_products(rows)
    assert report["added"] == 2 and retriever.num_products == 202
    encoder = ProductEncoder.load(path, retriever._state.featurizer)
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    cold = encoder.encode(table)  # no graph node: zero graph vector, mask 0
    hyd = json.loads((path / "hydration.json").read_text())
    boost = hyd["scale"] * quality_features(quality_columns_of(table, QUALITY), hyd["quality_normalisation"]) @ np.array(hyd["weights"])
    hit = retriever.search(rows[0]["title"], k=5, filter=[rows[0]["product_id"]], prune=False, lexical=False)
    assert hit.product_ids == [rows[0]["product_id"]] and hit.rows[0] == 200
    # the hit's score is the exact hydrated score: <q, v_cold> + boost
    p = retriever.stages()
    q = p.encode(p.buffers(1), (rows[0]["title"],), (None,))[0].copy()
    assert hit.cosines[0] == pytest.approx(float(q @ cold[0]), abs=1e-5)
    assert hit.scores[0] == pytest.approx(float(q @ cold[0] + boost[0]), abs=1e-5)
    everything = retriever.search(rows[1]["title"], k=202, prune=False)
    assert rows[1]["product_id"] in everything.product_ids and everything.count == 202


def test_removed_products_leave_every_channel_and_come_back_on_upsert(bundle):
    path, world = bundle
    retriever = Retriever.load(path)
    gone = ["P00010", "P00011"]
    titles = world["catalog"].column("title").to_pylist()
    assert retriever.has_lexical
    assert retriever.remove_products(gone) == 2 and retriever.removed_products == 2
    assert retriever.remove_products(gone) == 0  # again: a no-op
    for title in titles[10:12]:
        for lexical in (False, True):
            res = retriever.search(title, k=200, prune=False, lexical=lexical)
            assert not set(gone) & set(res.product_ids)
    with pytest.raises(ValueError, match="not in the catalogue"):
        retriever.remove_products(["P00012", "nope"])
    assert "P00012" in retriever.search(titles[12], k=200, prune=False).product_ids  # nothing removed
    retriever.upsert_products(world["catalog"].slice(10, 1))
    assert "P00010" in retriever.search(titles[10], k=200, prune=False).product_ids


@pytest.mark.parametrize("bad, match", [
    ({"title": None}, "missing_required in column 'title'"),
    ({"title": "   "}, "missing_required in column 'title'"),
    ({"price": "cheap"}, "non_numeric_value in column 'price'"),
    ({"rating": float("inf")}, "non_numeric_value in column 'rating'"),
    ({"colour": "red"}, r"unknown catalog columns \['colour'\]"),
])
def test_bad_rows_are_refused_whole_and_the_catalogue_is_unchanged(bundle, bad, match):
    path, _ = bundle
    retriever = Retriever.load(path)
    before = _results(retriever)
    rows = _new_rows(3, seed=11, prefix="BAD")
    rows[1].update(bad)
    with pytest.raises(CatalogRowsError, match=match):
        retriever.upsert_products(rows)
    assert retriever.num_products == 200
    assert _same(before, _results(retriever))
    assert retriever.search(rows[0]["title"], k=5, filter=[rows[0]["product_id"]]).count == 0


def test_duplicate_ids_in_one_batch_are_refused(bundle):
    retriever = Retriever.load(bundle[0])
    rows = _new_rows(2, seed=12, prefix="DUP")
    rows[1]["product_id"] = rows[0]["product_id"]
    with pytest.raises(CatalogRowsError, match="row 2: duplicate"):
        retriever.upsert_products(rows)
    assert retriever.num_products == 200


def test_a_bundle_without_the_product_tower_says_to_re_export(tmp_path):
    path, _, _ = tiny_bundle(tmp_path)
    retriever = Retriever.load(path)
    before = retriever.search("red mug", k=10)
    with pytest.raises(ValueError, match="re-export it with a current `upper-fast export`"):
        retriever.upsert_products([{"product_id": "x", "title": "red mug"}])
    after = retriever.search("red mug", k=10)
    assert before.product_ids == after.product_ids and retriever.num_products == 300


def test_save_writes_the_live_state_and_loading_it_serves_the_same(bundle, tmp_path):
    path, _ = bundle
    retriever = Retriever.load(path)
    retriever.upsert_products(_new_rows(5, seed=21, prefix="S"))
    retriever.upsert_products(bundle[1]["catalog"].slice(0, 2))
    retriever.remove_products(["P00020", "S00001"])
    user = "u3"
    retriever.observe([{"user_id": user, "product_id": "S00002", "interaction": "purchase", "timestamp": 5,
                        "query": "vintage ring"}])
    manifest = retriever.save(tmp_path / "saved")
    assert manifest["live"]["products_removed"] == 2 and manifest["dims"]["n_products"] == 205
    loaded = Retriever.load(tmp_path / "saved")  # verify=True: every checksum holds
    assert loaded.removed_products == 2 and loaded.num_products == 205
    for u in (None, user, "u5"):
        for lexical in (False, True):
            a = [retriever.search(q, user=u, k=50, prune=False, lexical=lexical) for q in QUERIES]
            b = [loaded.search(q, user=u, k=50, prune=False, lexical=lexical) for q in QUERIES]
            assert _same(a, b)
    with pytest.raises(FileExistsError):
        retriever.save(tmp_path / "saved")
    with pytest.raises(ValueError, match="own directory"):
        retriever.save(path, overwrite=True)
    # the saved bundle keeps accepting live changes
    loaded.upsert_products(_new_rows(1, seed=22, prefix="T"))
    assert loaded.num_products == 206


def test_an_observed_purchase_gives_exactly_the_tower_on_the_updated_history(bundle):
    path, world = bundle
    retriever = Retriever.load(path)
    user, product, query = "u4", "P00042", "oak chair gift"
    before = retriever.search(query, user=user, k=50, prune=False)
    counts = retriever.observe([(user, product, "purchase", 1_000, query)])
    assert counts == {"applied": 1, "unknown_user": 0, "unknown_product": 0}
    after = retriever.search(query, user=user, k=50, prune=False)
    # a fresh Retriever given the same event as context runs the user tower on the same history
    fresh = Retriever.load(path, user_cache=0)
    expected = fresh.search(query, user=(user, UserContext(recent_products=[(product, "purchase")],
                                                           recent_queries=[query])), k=50, prune=False)
    assert after.product_ids == expected.product_ids and np.array_equal(after.scores, expected.scores)
    assert (after.product_ids, after.scores.tolist()) != (before.product_ids, before.scores.tolist())
    state = retriever._state
    live_vec = retriever.stages().user_vector(user)
    p = fresh.stages()
    u = fresh._state.user_map.get(user)
    rows, types, queries, country = p.known_history(u, None)
    rows = np.concatenate([[42], rows[:-1]])
    types = np.concatenate([[4], types[:-1]])
    queries = [state.featurizer.query_key(query), *[q for q in queries if q != state.featurizer.query_key(query)]][:3]
    assert np.array_equal(live_vec, retriever.stages().compute_user_vector((rows, types, queries, country)))


def test_observe_bounds_histories_skips_unknowns_and_refuses_bad_events(bundle):
    retriever = Retriever.load(bundle[0])
    events = [{"user_id": "u1", "product_id": f"P{i:05d}", "interaction": "click", "timestamp": 100 + i,
               "query": f"query {i}"} for i in range(N + 3)]
    events.append({"user_id": "nobody", "product_id": "P00001", "interaction": "click", "timestamp": 1})
    events.append({"user_id": "u1", "product_id": "unknown", "interaction": "favorite", "timestamp": 200})
    counts = retriever.observe(events)
    assert counts == {"applied": N + 4, "unknown_user": 1, "unknown_product": 1}
    state = retriever._state
    rows, types, queries, _, gen = state.live_histories[state.user_map.get("u1")]
    assert rows.tolist() == list(range(N + 2, 2, -1)) and (types == 1).all()  # most recent first, N kept
    assert len(queries) == 3 and queries[0] == "query 8"
    for bad in ({"user_id": "u1", "interaction": "buy", "timestamp": 1},
                {"user_id": "u1", "interaction": "click", "timestamp": "yesterday"},
                {"user_id": 7, "interaction": "click", "timestamp": 1}):
        with pytest.raises(ValueError):
            retriever.observe([events[0], bad])
    assert state.live_histories[state.user_map.get("u1")][4] == gen  # nothing applied


def test_searches_never_see_half_a_batch(bundle):
    retriever = Retriever.load(bundle[0])
    errors: list[BaseException] = []
    stop = threading.Event()
    pairs = [[f"PAIR{i}A", f"PAIR{i}B"] for i in range(30)]

    def search() -> None:
        try:
            while not stop.is_set():
                for ids in pairs[::7]:
                    res = retriever.search("linen lamp pair", k=10, filter=ids, prune=False)
                    assert res.count in (0, 2), res.product_ids
                retriever.search("red mug", user="u2", k=20)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i, ids in enumerate(pairs):
            retriever.upsert_products([{"product_id": p, "title": "linen lamp pair", "price": 10.0} for p in ids])
            retriever.observe([("u2", ids[0], "click", i, "linen lamp")])
            if i % 2:
                retriever.remove_products(ids)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    for i, ids in enumerate(pairs):
        res = retriever.search("linen lamp pair", k=10, filter=ids, prune=False)
        assert res.count == (0 if i % 2 else 2)
