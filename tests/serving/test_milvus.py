"""Milvus as the Retriever's vector store (upper_fast.milvus), against Milvus Lite (a local .db file)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs the [scale] extra (pymilvus, milvus-lite)")
pytest.importorskip("milvus_lite", reason="Milvus Lite (a local .db URI) needs the milvus-lite package")

from serve_tiny import tiny_bundle  # noqa: E402

from upper_fast import Retriever  # noqa: E402
from upper_fast.milvus import MilvusBackend, collection_name, push_to_milvus  # noqa: E402

N_PRODUCTS = 300
CATEGORIES = ("mugs", "lamps", "rings")


def _display(world: dict) -> pa.Table:
    n = len(world["product_ids"])
    return pa.table({"product_id": world["product_ids"], "title": world["titles"],
                     "category": [CATEGORIES[i % 3] for i in range(n)],
                     "price": [float(5 + (i * 7) % 90) for i in range(n)]})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("milvus")
    from serve_tiny import tiny_world

    display = _display(tiny_world(N_PRODUCTS, seed=0))
    path, _, world = tiny_bundle(tmp, "bundle", split=True, weights=(0.3, 0.2), n_products=N_PRODUCTS,
                                 display=display)
    return path, world, tmp


@pytest.fixture(scope="module")
def uri(bundle):
    return str(bundle[2] / "products.db")


@pytest.fixture(scope="module")
def pushed(bundle, uri):
    fields = pa.table({"product_id": bundle[1]["product_ids"],
                       "shop_country": [("DE", "FR", "US")[i % 3] for i in range(N_PRODUCTS)],
                       "in_stock": [i % 4 != 0 for i in range(N_PRODUCTS)]})
    return push_to_milvus(bundle[0], uri, collection="exact", fields=fields, index_type="FLAT")


@pytest.fixture(scope="module")
def local(bundle):
    return Retriever.load(bundle[0])


@pytest.fixture(scope="module")
def remote(bundle, uri, pushed):
    return Retriever.load(bundle[0], backend=MilvusBackend(uri, collection="exact"))


QUERIES = ["red mug", "vintage oak chair", "wool", "gift ring blue", "never seen words"]


def _same(a, b):
    assert a.product_ids == b.product_ids
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.cosines, b.cosines, atol=1e-5)
    np.testing.assert_array_equal(a.tiers, b.tiers)


def test_push_writes_every_product_with_its_fields(pushed, bundle):
    assert pushed["rows"] == N_PRODUCTS and pushed["metric"] == "IP" and pushed["collection"] == "exact"
    assert pushed["dim"] == 16 + 2 + 1  # [v ; scale*f ; MIPS column], as the bundle's index holds them
    assert pushed["fields"] == {"category": "varchar", "price": "double", "shop_country": "varchar",
                                "in_stock": "bool"}


@pytest.mark.parametrize("user", [None, "u3", "u7"])
def test_exact_collection_serves_what_the_in_process_index_serves(local, remote, user):
    """FLAT in Milvus vs the in-process HNSW at ef 200 over 300 products (exact there too): same hits,
    scores, cosines and tiers, pruned or not."""
    for q in QUERIES:
        _same(local.search(q, user=user, k=50), remote.search(q, user=user, k=50))
        _same(local.search(q, user=user, k=20, prune=False), remote.search(q, user=user, k=20, prune=False))
        _same(local.search(q, user=user, k=20, min_tier=2), remote.search(q, user=user, k=20, min_tier=2))


def test_batch_and_id_filters(local, remote, bundle):
    for a, b in zip(local.search_batch(QUERIES, k=30), remote.search_batch(QUERIES, k=30)):
        _same(a, b)
    allowed = bundle[1]["product_ids"][::7]
    _same(local.search("red mug", k=10, filter=allowed), remote.search("red mug", k=10, filter=allowed))


def test_filter_expressions_on_pushed_fields(local, remote):
    n = local.num_products
    mask = np.array([i % 3 == 1 and (5 + (i * 7) % 90) < 50 and i % 4 != 0 for i in range(n)])
    expr = "category == 'lamps' and price < 50 and in_stock == true"
    _same(local.search("oak lamp", k=25, filter=mask), remote.search("oak lamp", k=25, filter=expr))
    with pytest.raises(ValueError, match="Milvus rejected the filter expression"):
        remote.search("oak lamp", filter="colour == 'red'")
    with pytest.raises(TypeError, match="needs a backend"):
        local.search("oak lamp", filter="category == 'lamps'")


def test_hnsw_collection_overlaps_the_in_process_index(bundle, uri, local):
    summary = push_to_milvus(bundle[0], uri)  # default name, HNSW with the bundle's M / efConstruction
    assert summary["collection"] == collection_name("tiny-0") and summary["index"]["type"] == "HNSW"
    hnsw = Retriever.load(bundle[0], backend=MilvusBackend(uri))
    overlap = [len(set(local.search(q, k=100, prune=False).product_ids)
                   & set(hnsw.search(q, k=100, prune=False).product_ids)) / 100 for q in QUERIES]
    assert min(overlap) >= 0.95


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uri_that_does_not_answer_fails_at_load_naming_the_fix(bundle):
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"does not answer.*start Milvus there"):
        Retriever.load(bundle[0], backend=MilvusBackend(f"http://127.0.0.1:{_closed_port()}", timeout_s=2.0))
    assert time.perf_counter() - t0 < 15
    with pytest.raises(ConnectionError, match="does not answer"):
        push_to_milvus(bundle[0], str(bundle[2] / "no" / "such" / "folder.db"))


def test_missing_or_foreign_collection_is_refused(bundle, uri, pushed):
    with pytest.raises(ValueError, match=r"no collection 'absent'.*upper-fast push-milvus"):
        Retriever.load(bundle[0], backend=MilvusBackend(uri, collection="absent"))
    other, _, _ = tiny_bundle(bundle[2], "other", seed=1, n_products=N_PRODUCTS)
    with pytest.raises(ValueError, match=r"holds vectors of model 'tiny-0', the bundle is 'tiny-1'"):
        Retriever.load(other, backend=MilvusBackend(uri, collection="exact"))


def test_push_refuses_to_replace_without_overwrite_and_bad_fields(bundle, uri, pushed):
    with pytest.raises(FileExistsError, match="overwrite"):
        push_to_milvus(bundle[0], uri, collection="exact")
    ids = bundle[1]["product_ids"]
    with pytest.raises(ValueError, match=r"no row for 1 bundle products"):
        push_to_milvus(bundle[0], uri, collection="partial", fields=pa.table({"product_id": ids[1:], "x": ids[1:]}))
    with pytest.raises(ValueError, match="cannot be a Milvus field"):
        push_to_milvus(bundle[0], uri, collection="partial", fields=pa.table({"product_id": ids, "boost": ids}))
    with pytest.raises(ValueError, match="not a Milvus collection name"):
        push_to_milvus(bundle[0], uri, collection="1-bad name")


def test_backend_upsert_and_remove(bundle, uri, local):
    push_to_milvus(bundle[0], uri, collection="live", index_type="FLAT")
    r = Retriever.load(bundle[0], backend=MilvusBackend(uri, collection="live"))
    backend = r._state.backend
    top = r.search("red mug", k=5, prune=False)
    backend.remove(top.rows[:2])
    after = r.search("red mug", k=5, prune=False)
    assert not set(top.product_ids[:2]) & set(after.product_ids)
    assert after.product_ids[:3] == top.product_ids[2:5]
    # Put row 0's vector back under the first removed row: it is found again, scored as row 0 would be.
    from upper_fast.bundle import hydrated_product_matrix

    world = bundle[1]
    hydrated = hydrated_product_matrix(world["product_vectors"], world["quality"], 0.1, True)
    row = int(top.rows[0])
    backend.upsert(np.array([row]), hydrated[[row]], {"product_id": [top.product_ids[0]],
                                                      "boost": [float(r._state.boost[row])], "category": ["mugs"]})
    back = r.search("red mug", k=5, prune=False)
    assert back.product_ids[:4] == [top.product_ids[0], *top.product_ids[2:5]]
    np.testing.assert_allclose(back.scores[0], top.scores[0], atol=1e-5)
    assert backend.count() == N_PRODUCTS - 1
    with pytest.raises(ValueError, match=r"fields lack \['boost'\]"):
        backend.upsert(np.array([1]), hydrated[[1]], {"product_id": ["x"]})


def test_import_upper_fast_does_not_import_pymilvus():
    code = "import sys, upper_fast, upper_fast.retriever; assert 'pymilvus' not in sys.modules, 'pymilvus imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_live_upserts_and_removals_go_to_milvus(tmp_path):
    from live_tiny import live_bundle, tiny_catalog

    from upper_fast.data.validate import CatalogRowsError

    path, world = live_bundle(tmp_path)
    uri = str(tmp_path / "live.db")
    push_to_milvus(path, uri, collection="live", index_type="FLAT")
    local = Retriever.load(path)
    remote = Retriever.load(path, backend=MilvusBackend(uri, collection="live"))
    backend = remote._state.backend
    new = tiny_catalog(3, seed=9, prefix="NEW").to_pylist()
    for r in (local, remote):
        assert r.upsert_products(new)["added"] == 3
        r.upsert_products(world["catalog"].slice(4, 1))  # a replaced product keeps its row
        assert r.remove_products(["P00010", "NEW00001"]) == 2
    assert backend.count() == 200 + 3 - 2
    queries = [new[0]["title"], new[1]["title"], "red mug", world["catalog"].column("title")[10].as_py()]
    for q in queries:
        _same(local.search(q, k=60, prune=False), remote.search(q, k=60, prune=False))
    bad = tiny_catalog(2, seed=10, prefix="BAD").to_pylist()
    bad[1]["title"] = None
    with pytest.raises(CatalogRowsError):
        remote.upsert_products(bad)
    assert backend.count() == 201 and remote.num_products == 203
    # the live state saved from the Milvus-served Retriever loads in process to the same results
    remote.save(tmp_path / "saved")
    saved = Retriever.load(tmp_path / "saved")
    for q in queries:
        _same(saved.search(q, k=60, prune=False), remote.search(q, k=60, prune=False))


def test_cli_push_and_search(bundle, tmp_path, capsys):
    import pyarrow.csv as pcsv

    from upper_fast.cli import main

    path, world, _ = bundle
    uri = str(tmp_path / "cli.db")
    fields = tmp_path / "fields.csv"
    pcsv.write_csv(pa.table({"product_id": world["product_ids"],
                             "in_stock": [i % 2 == 0 for i in range(N_PRODUCTS)]}), fields)
    assert main(["push-milvus", str(path), uri, "--fields", str(fields), "--index", "FLAT"]) == 0
    out = capsys.readouterr().out
    assert f"pushed {N_PRODUCTS} products of tiny-0" in out and "in_stock (bool)" in out
    assert main(["push-milvus", str(path), uri]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["search", str(path), "red mug", "--milvus", uri, "--filter", "in_stock == false",
                 "--no-prune", "--k", "20", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 20 and all(int(h["product_id"][1:]) % 2 == 1 for h in hits)
    assert main(["search", str(path), "red mug", "--filter", "in_stock == false"]) == 2
    assert "--milvus URI" in capsys.readouterr().err
    assert main(["search", str(path), "red mug", "--milvus", f"http://127.0.0.1:{_closed_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "upper-fast search: error: Milvus at http://127.0.0.1:" in err
