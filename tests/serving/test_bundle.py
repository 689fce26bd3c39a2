import json
import os

import numpy as np
import pytest

import upper_fast
from upper_fast.bundle import BUNDLE_FILES, BUNDLE_FORMAT_VERSION, read_manifest, sha256_file, verify_bundle
from serve_tiny import tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path, _, world = tiny_bundle(tmp_path_factory.mktemp("b"))
    return path, world


def test_manifest_lists_every_file_with_sha256(bundle):
    path, world = bundle
    m = verify_bundle(path)
    assert m["format_version"] == BUNDLE_FORMAT_VERSION
    assert m["package_version"] == upper_fast.__version__
    assert set(m["files"]) == set(BUNDLE_FILES)
    for name, entry in m["files"].items():
        assert entry["sha256"] == sha256_file(path / name)
        assert entry["bytes"] == (path / name).stat().st_size
    assert m["dims"]["n_products"] == len(world["product_ids"])
    assert m["dims"]["index_dim"] == m["dims"]["query_dim"] + m["dims"]["quality_features"] + 1  # MIPS column
    assert sorted(os.listdir(path)) == sorted([*BUNDLE_FILES, "manifest.json"])


def test_round_trip_arrays(bundle):
    path, world = bundle
    assert (path / "product_ids.txt").read_text().split("\n")[:-1] == world["product_ids"]
    np.testing.assert_array_equal(np.load(path / "product_vectors.npy"), world["product_vectors"])
    np.testing.assert_array_equal(np.load(path / "quality.npy"), world["quality"])
    assert json.loads((path / "thresholds.json").read_text())["purchase"] == pytest.approx(0.4)


def test_bundle_type_reads_what_was_written_and_the_retriever_takes_it(bundle, tmp_path):
    import shutil

    from upper_fast.bundle import Bundle

    path, world = bundle
    b = Bundle.open(path)
    assert Bundle.open(b) is b
    assert b.product_ids() == world["product_ids"] and b.dims["n_products"] == len(world["product_ids"])
    np.testing.assert_array_equal(b.product_vectors(), world["product_vectors"])
    np.testing.assert_array_equal(b.quality(), world["quality"])
    hyd = b.hydration()
    np.testing.assert_array_equal(b.hydrated_products()[:, : b.dims["query_dim"]], world["product_vectors"])
    np.testing.assert_allclose(b.hydrated_products() @ np.r_[np.zeros(b.dims["query_dim"], np.float32), hyd.query_tail()],
                               hyd.boost(b.quality()), rtol=1e-5, atol=1e-6)
    assert b.thresholds().thresholds["purchase"] == pytest.approx(0.4)
    assert not b.has_lexical and not b.has_product_tower
    histories = b.user_histories()
    assert histories.rows.shape == (len(histories.ids), b.dims["hist_items"])
    by_path, by_bundle = upper_fast.Retriever.load(path), upper_fast.Retriever.load(b)
    for q in ("red mug", "wool socks"):
        assert by_path.search(q, k=10).product_ids == by_bundle.search(q, k=10).product_ids
    with pytest.raises(TypeError, match="path or a Bundle"):
        Bundle.open(5)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    np.save(copy / "product_graph.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(upper_fast.FormatError, match="product_graph.npy has shape"):
        Bundle.open(copy, verify=False).product_graph()


@pytest.mark.parametrize("victim", ["product_vectors.npy", "index.upf", "query_tower.onnx", "users.parquet"])
def test_damaged_file_is_format_error(bundle, tmp_path, victim):
    import shutil

    path, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(upper_fast.FormatError, match=victim):
        verify_bundle(copy)
    with pytest.raises(upper_fast.FormatError):
        upper_fast.Retriever.load(copy)


def test_truncated_missing_and_foreign(bundle, tmp_path):
    import shutil

    path, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    with open(copy / "quality.npy", "r+b") as f:
        f.truncate(10)
    with pytest.raises(upper_fast.FormatError, match="bytes"):
        verify_bundle(copy)
    (copy / "quality.npy").unlink()
    with pytest.raises(upper_fast.FormatError, match="missing"):
        verify_bundle(copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(upper_fast.FormatError, match="version 999"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(upper_fast.FormatError, match="JSON"):
        read_manifest(copy)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "nowhere")


def test_atomic_write_refuses_overwrite_and_leaves_no_temp(bundle, tmp_path):
    path, _ = bundle
    with pytest.raises(FileExistsError):
        tiny_bundle(path.parent, name=path.name)
    assert not [p for p in os.listdir(path.parent) if p.startswith(".")]
    verify_bundle(path)


def test_ef_is_raised_until_the_hydrated_recall_target_or_max_ef(tmp_path):
    """target_recall: ef grows 1.5x per try while recall@100 is below target; an unreachable target
    stops at max_ef, and the index file, the manifest and the Retriever all use the final ef."""
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    path, _, _ = tiny_bundle(tmp_path, "tuned", ef_search=100, recall_queries=queries, target_recall=1.01, max_ef=300)
    idx = read_manifest(path)["index"]
    assert [ef for ef, _ in idx["ef_tuning"]] == [100, 150, 225, 300]
    assert idx["ef_search"] == 300 and idx["recall_at_100"] == idx["ef_tuning"][-1][1]
    assert upper_fast.Index.load(str(path / "index.upf")).ef == 300
    assert upper_fast.Retriever.load(path)._state.ef == 300
    path, _, _ = tiny_bundle(tmp_path, "fixed", ef_search=100, recall_queries=queries)
    idx = read_manifest(path)["index"]
    assert idx["ef_search"] == 100 and len(idx["ef_tuning"]) == 1


def test_split_tower_files_both_or_neither(tmp_path):
    """The optional split tower: listed and verified when present, a damaged one is a FormatError,
    a manifest naming one without the other is refused, and a bundle without them still loads."""
    import shutil

    from upper_fast.bundle import SPLIT_TOWER_FILES, write_manifest

    path, _, _ = tiny_bundle(tmp_path, "split", split=True)
    m = verify_bundle(path)
    assert set(m["files"]) == set(BUNDLE_FILES) | set(SPLIT_TOWER_FILES)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    data = bytearray((copy / "query_part.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "query_part.onnx").write_bytes(bytes(data))
    with pytest.raises(upper_fast.FormatError, match="query_part.onnx"):
        verify_bundle(copy)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]["user_tower.onnx"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(upper_fast.FormatError, match="optionally with all of"):
        read_manifest(copy)
    (copy / "user_tower.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="both or neither"):
        write_manifest(copy, model_version="x", dims=manifest["dims"], dtypes=manifest["dtypes"])


def test_compact_bundle_records_the_served_recall(tmp_path):
    """An i8 bundle's manifest recall is what the Retriever serves (walk + float32 re-rank), never
    below the index's own recall on the same probes."""
    from upper_fast.bundle import hydrated_ann_recall, hydrated_product_matrix

    rng = np.random.default_rng(3)
    probes = rng.standard_normal((40, 16)).astype(np.float32)
    path, _, world = tiny_bundle(tmp_path, "i8", index_dtype="i8", n_products=400, weights=(0.5, -0.25),
                                 recall_queries=probes, ef_search=8, target_recall=None)
    m = read_manifest(path)
    assert m["index"]["recall_mode"].startswith("float32 re-rank")
    w = np.array([0.5, -0.25], np.float32)
    hydrated = hydrated_product_matrix(world["product_vectors"], world["quality"], 0.1, True)
    index = upper_fast.Index.load(str(path / "index.upf"))
    own = hydrated_ann_recall(index, hydrated, probes, w, 8, True)
    served = hydrated_ann_recall(index, hydrated, probes, w, 8, True,
                                 rerank=(world["product_vectors"], (0.1 * (world["quality"] @ w)).astype(np.float32)))
    assert m["index"]["recall_at_100"] == pytest.approx(served)
    assert served >= own
    f32 = read_manifest(tiny_bundle(tmp_path, "f32", n_products=400, recall_queries=probes)[0])
    assert f32["index"]["recall_mode"] == "index"


def test_a_view_without_query_nodes_serves_known_queries_as_new_ones(bundle, tmp_path):
    """`without_query_nodes`: a known query searched through the view gets what the same terms get
    with no graph node; the bundle itself is untouched and still verifies; a non-empty target is refused."""
    from upper_fast.bundle import Bundle, without_query_nodes

    path, world = bundle
    known = world["query_keys"][0]
    view = without_query_nodes(path, tmp_path / "view")
    assert Bundle.open(view, verify=False).query_keys() == [] and known in Bundle.open(path).query_keys()
    verify_bundle(path)
    original, as_new = upper_fast.Retriever.load(path), upper_fast.Retriever.load(view, verify=False)
    stages_o, stages_n = original.stages(), as_new.stages()
    buf_o, buf_n = stages_o.buffers(1), stages_n.buffers(1)
    stages_o.fill_query(buf_o, 0, known)
    stages_n.fill_query(buf_n, 0, known)
    assert buf_o["query_graph_mask"][0] == 1.0 and buf_n["query_graph_mask"][0] == 0.0
    np.testing.assert_array_equal(buf_o["query_terms"][0], buf_n["query_terms"][0])
    assert as_new.search(known, k=10).count == 10
    with pytest.raises(ValueError, match="not empty"):
        without_query_nodes(path, tmp_path / "view")
