"""End to end on a tiny simulated world: `upper-fast demo`, then export details, info and search."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
train_mod = pytest.importorskip("upper_fast_train.loop", reason="needs the training side (upper_fast_train)")

import upper_fast
from upper_fast.bundle import verify_bundle
from upper_fast.cli import main as cli_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    args = ["demo", "--out", str(out), "--products", "300", "--users", "80", "--events", "3000", "--queries", "80",
            "--max-steps", "5", "--small-model", "--boost-trials", "5", "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "upper_fast.cli", *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_demo_prints_every_stage_labelled_simulated(demo):
    _, text = demo
    for marker in ("[1/5] generated (simulated)", "[2/5] trained", "[3/5] exported bundle", "[4/5] search, side by side",
                   "[5/5] quality on the test window", "SIMULATED", "purchase_recall@100", "top-5 overlap",
                   "windows: train <", "Served through Retriever.search_batch",
                   "model, user features blanked", "BM25 (bm25s)", "chosen: the 3 of", "mean Kendall tau"):
        assert marker in text, marker


def test_exported_bundle_is_complete_and_consistent(demo):
    out, _ = demo
    m = verify_bundle(out / "bundle")
    assert m["simulated"] is True
    assert m["onnx_parity_max_abs"] < 1e-4
    assert m["index"]["recall_at_100"] >= 0.99
    hyd = json.loads((out / "bundle" / "hydration.json").read_text())
    assert hyd["tuning"]["kept"] in ("learned", "zero")
    if hyd["tuning"]["kept"] == "zero":
        assert not any(hyd["weights"])
    else:
        assert hyd["tuning"]["heldout_gain"] > 0
    q = np.load(out / "bundle" / "quality.npy")
    assert q.min() >= 0.0 and q.max() <= 1.0


def test_users_history_matches_training_inputs(demo):
    """The bundle's stored history gives the same tower inputs as training's own builder at the start of the
    test window (export takes histories as of then, so served figures on the test window see no test event)."""
    import pyarrow as pa

    from upper_fast.data import load_dataset
    from upper_fast_train import load_run

    out, _ = demo
    dataset = load_dataset(out / "data", progress=False)
    run = load_run(out / "run", dataset)
    r = upper_fast.Retriever.load(out / "bundle")
    users = [u for u in r._state.user_map.keys()][:5]
    last = dataset.windows.valid_end
    assert verify_bundle(out / "bundle")["users_as_of"] == last
    events = pa.table({"timestamp": pa.array([last] * len(users), pa.int64()), "user_id": users,
                       "query": ["gift"] * len(users)})
    expect = run.event_query_inputs(events, dataset)
    p = r.stages()
    buf = p.buffers(len(users))
    for i, u in enumerate(users):
        p.fill_inputs(buf, i, "gift", u)
    for name in ("hist_item_type", "hist_query_terms", "user_country", "query_terms"):
        np.testing.assert_array_equal(buf[name], expect[name], err_msg=name)
    np.testing.assert_allclose(buf["hist_item_graph"], expect["hist_item_graph"], atol=1e-6)
    ours = p.run_full(buf)
    np.testing.assert_allclose(ours, run.encode_queries(expect), atol=1e-4)


def test_info_and_search_commands(demo, capsys):
    out, _ = demo
    assert cli_main(["info", str(out / "bundle")]) == 0
    info = capsys.readouterr().out
    assert "recall@100" in info and "on the validation window: ef" in info and "thresholds calibrated on" in info
    m = verify_bundle(out / "bundle")
    sel = m["index"]["ef_selection"]
    assert sel["by"] == "served recall" and m["index"]["ef_search"] == sel["ef"]
    assert sel["recall"] >= sel["reference_recall"] - sel["tolerance"]
    th = json.loads((out / "bundle" / "thresholds.json").read_text())
    assert th["negative"] < th["click"] <= th["favorite"] <= th["add_to_cart"] <= th["purchase"]
    assert m["thresholds_calibration"]["window"] == "validation"
    assert cli_main(["search", str(out / "bundle"), "gift", "--k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["count"] <= 3
    # The table shows each hit's title from the bundle's display.parquet, as the catalogue has it.
    import pyarrow.parquet as pq

    titles = dict(zip(*pq.read_table(out / "data" / "catalog.parquet", columns=["product_id", "title"]).to_pydict().values()))
    assert cli_main(["search", str(out / "bundle"), "gift", "--k", "3", "--no-prune"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:1] == " " and line.strip()[:1].isdigit()]
    assert lines and all(titles[line.split()[1]] in line for line in lines)
    assert cli_main(["info", str(out / "missing")]) == 2


def test_sharded_encoding_merges_to_the_full_matrix(demo, tmp_path):
    from upper_fast.data import load_dataset
    from upper_fast_train import load_run
    from upper_fast_train.export import encode_product_shard, merge_product_shards

    out, _ = demo
    dataset = load_dataset(out / "data", progress=False)
    run = load_run(out / "run", dataset)
    for i in range(3):
        encode_product_shard(run, dataset.catalog, 3, i, tmp_path)
    merged = merge_product_shards(tmp_path, dataset.catalog.num_rows)
    np.testing.assert_allclose(merged, run.encode_products(dataset.catalog), atol=1e-5)
    next(tmp_path.glob("*0001-of-0003.json")).unlink()
    with pytest.raises(FileNotFoundError, match="2 of 3"):
        merge_product_shards(tmp_path, dataset.catalog.num_rows)


def test_eval_scores_the_bundle_as_served(demo, tmp_path, capsys):
    out, _ = demo
    rc = cli_main(["eval", str(out / "run"), "--data", str(out / "data"), "--bundle", str(out / "bundle"),
                   "--ks", "100", "--json", "--no-progress"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    served, exact = report["served"], report["systems"]["model"]["purchase_recall@100"]
    # Pruning only removes hits of the same ANN list, so it can only lose recall.
    assert served["served/purchase_recall@100"] <= served["served_unpruned/purchase_recall@100"] + 1e-12
    assert abs(served["served_unpruned/purchase_recall@100"] - exact) < 0.1
    assert 0.0 <= served["served/cut_share"] <= 1.0 and served["latency_ms_p99"] >= served["latency_ms_p50"] > 0
    # A bundle that records another run is refused before any work.
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert cli_main(["eval", str(other), "--data", str(out / "data"), "--bundle", str(out / "bundle")]) == 2
    assert "was exported from" in capsys.readouterr().err
    # Evaluating on other windows than the bundle was fitted on is refused, naming the fix.
    windows = verify_bundle(out / "bundle")["windows"]
    rc = cli_main(["eval", str(out / "run"), "--data", str(out / "data"), "--bundle", str(out / "bundle"),
                   "--train-end", str(windows["train_end"]), "--valid-end", str(windows["valid_end"] + 86400),
                   "--no-progress"])
    assert rc == 2 and "pass the same --train-end/--valid-end" in capsys.readouterr().err
    # ... and so is a train window other than the one the run learned from.
    rc = cli_main(["eval", str(out / "run"), "--data", str(out / "data"), "--train-end", str(windows["valid_end"]),
                   "--valid-end", str(windows["valid_end"] + 86400), "--no-progress"])
    assert rc == 2 and "was trained on the window before" in capsys.readouterr().err



def test_eval_scores_the_validation_window_when_asked(demo, capsys):
    out, _ = demo
    args = ["eval", str(out / "run"), "--data", str(out / "data"), "--ks", "100", "--json", "--no-progress"]
    assert cli_main(args + ["--window", "validation"]) == 0
    valid = json.loads(capsys.readouterr().out)
    assert cli_main(args) == 0
    test = json.loads(capsys.readouterr().out)
    assert (valid["window"], test["window"]) == ("validation", "test")
    counts = [r["systems"]["model"]["requests"] for r in (valid, test)]
    assert min(counts) > 0 and counts[0] != counts[1]  # two different sets of requests
    # The bundle's histories run to valid_end: its served figures exist for the test window only.
    rc = cli_main(args + ["--window", "validation", "--bundle", str(out / "bundle")])
    assert rc == 2 and "test window only" in capsys.readouterr().err


@pytest.mark.parametrize("denser_wins", [True, False])
def test_a_denser_graph_is_tried_where_the_default_needs_a_large_ef(demo, tmp_path, monkeypatch, denser_wins):
    """Forced here (the tiny world serves near-exact recall at the smallest ef): the export rebuilds the
    index with the denser graph, chooses ef again and keeps the faster graph, with a bundle whose
    checksums hold either way."""
    from upper_fast.data import load_dataset
    from upper_fast_train import export, served

    out, _ = demo
    dataset = load_dataset(out / "data", progress=False)
    monkeypatch.setattr(export, "DENSER_GRAPH_ABOVE_EF", -1)
    real = served.choose_served_ef
    calls = []

    def timed(*args, **kwargs):  # the second call (the denser graph) is made slower or faster
        report = real(*args, **kwargs)
        calls.append(report)
        if len(calls) == 2:
            report = {**report, "latency_ms_p99": calls[0]["latency_ms_p99"] * (0.5 if denser_wins else 2.0)}
        return report

    monkeypatch.setattr(served, "choose_served_ef", timed)
    m = export.export_bundle(out / "run", tmp_path / "b", dataset, progress=False, boost_trials=3)
    sel = m["index"]["ef_selection"]
    assert len(calls) == 2 and [g["M"] for g in sel["graphs"]] == [16, export.DENSER_GRAPH[0]]
    assert m["index"]["M"] == (export.DENSER_GRAPH[0] if denser_wins else 16)
    assert sel["graph"].startswith("denser" if denser_wins else "default")
    on_disk = verify_bundle(tmp_path / "b")  # every sha256 holds, the index's included
    assert on_disk["index"]["M"] == m["index"]["M"] and on_disk["index"]["ef_search"] == sel["ef"]
    assert upper_fast.Index.load(str(tmp_path / "b" / "index.upf")).M == m["index"]["M"]
    assert upper_fast.Retriever.load(tmp_path / "b").search("gift", k=5).count > 0


def test_served_ef_needs_every_large_segment_within_the_tolerance(demo, tmp_path, monkeypatch):
    """Overall recall within the tolerance is not enough: a segment with enough purchase requests that
    loses more than the tolerance keeps ef climbing."""
    import shutil

    from upper_fast.data import load_dataset
    from upper_fast_train import served

    out, _ = demo
    bundle = tmp_path / "b"
    shutil.copytree(out / "bundle", bundle)
    dataset = load_dataset(out / "data", progress=False)
    monkeypatch.setattr(served, "EF_SEGMENT_MIN_REQUESTS", 0)  # the tiny world has few validation purchases
    monkeypatch.setattr(served, "EF_PURCHASE_MIN_REQUESTS", 0)
    monkeypatch.setattr(served, "query_segments", lambda dataset, keys: ["tail"] * len(keys))
    # the reference (largest ef) is measured first, then the ladder from the smallest ef up
    figures = iter([(0.90, 0.80), (0.899, 0.70), (0.899, 0.799)])
    as_new = iter([0.5, 0.5, 0.5])  # the same known queries searched as new ones: no loss

    def fake_metrics(retrieved, requests, segments, ks):
        if set(segments) == {"unseen"}:
            return {"purchase_recall@100": next(as_new)}
        overall, tail = next(figures)
        return {"purchase_recall@100": overall, **{f"purchase_recall@100/{s}": tail for s in served.SEGMENTS}}

    monkeypatch.setattr(served, "request_metrics", fake_metrics)
    report = served.choose_served_ef(bundle, dataset, ladder=(100, 200, 400), tolerance=0.005, progress=False,
                                     latency_sample=5)
    assert report["metric"] == "purchase_recall@100" and "tail" in report["segments_guarded"] and report["ef"] == 200
    assert report["segment_curves"]["tail"] == [[100, 0.70], [200, 0.799], [400, 0.80]]
    assert report["as_new_queries_requests"] > 0 and report["segment_curves"]["as_new_queries"] == [[100, 0.5], [200, 0.5], [400, 0.5]]


def test_served_ef_also_holds_for_known_queries_searched_as_new_ones(demo, tmp_path, monkeypatch):
    """Where the validation window's queries are all known, the same requests searched without their
    graph node (as the later traffic's new queries are) must be within the tolerance too: here they
    lose at ef 100 and 200, so ef climbs to 400 although every segment held at 100. The view that
    serves them is a real bundle view (terms only) and is removed afterwards."""
    import shutil
    import tempfile

    from upper_fast.data import load_dataset
    from upper_fast_train import served

    out, _ = demo
    bundle = tmp_path / "b"
    shutil.copytree(out / "bundle", bundle)
    dataset = load_dataset(out / "data", progress=False)
    monkeypatch.setattr(served, "EF_SEGMENT_MIN_REQUESTS", 0)
    monkeypatch.setattr(served, "EF_PURCHASE_MIN_REQUESTS", 0)
    monkeypatch.setattr(served, "query_segments", lambda dataset, keys: ["head"] * len(keys))
    as_new = iter([0.60, 0.50, 0.58, 0.598])
    seen = []

    def fake_metrics(retrieved, requests, segments, ks):
        if set(segments) == {"unseen"}:
            seen.append(len(segments))
            return {"purchase_recall@100": next(as_new)}
        return {"purchase_recall@100": 0.9, **{f"purchase_recall@100/{s}": 0.9 for s in served.SEGMENTS}}

    monkeypatch.setattr(served, "request_metrics", fake_metrics)
    before = set(Path(tempfile.gettempdir()).glob("upper-fast-new-queries-*"))
    report = served.choose_served_ef(bundle, dataset, ladder=(100, 200, 400, 800), tolerance=0.005, progress=False,
                                     latency_sample=5)
    assert report["ef"] == 400 and report["segments_guarded"][-1] == "as_new_queries"
    assert report["segment_curves"]["as_new_queries"] == [[100, 0.50], [200, 0.58], [400, 0.598], [800, 0.60]]
    assert seen and len(set(seen)) == 1 and seen[0] == report["as_new_queries_requests"]
    assert set(Path(tempfile.gettempdir()).glob("upper-fast-new-queries-*")) == before
    assert upper_fast.bundle.read_manifest(bundle)["index"]["ef_search"] == 400


def test_served_users_pass_the_country_a_service_knows():
    """A signed-out request (or a user the bundle does not know) is searched with the shopper's
    country, as the exact evaluation scores it; without a country it is anonymous."""
    import pyarrow as pa

    from upper_fast import UserContext
    from upper_fast_train.served import served_users

    events = pa.table({"user_id": ["u1", None, "u9", None], "country": ["DE", "FR", "US", None]})
    assert served_users(events, {"u1"}) == ["u1", UserContext(country="FR"), UserContext(country="US"), None]
    assert served_users(events.drop(["country"]), {"u1"}) == ["u1", None, None, None]
