"""End to end on a tiny generated world: train -> run directory -> load_run -> encode; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("upper_fast_train.graph", reason="needs the graph/text/pretrain modules (evalgraph area)")

from _train_synthetic import single_thread  # noqa: E402,F401

from upper_fast_train import TrainConfig, load_run, train  # noqa: E402
from upper_fast_train.towers import QUERY_INPUTS  # noqa: E402

RUN_FILES = ["config.json", "model.safetensors", "graph.npz", "tokenizer.json", "vocab.json", "thresholds.json", "metrics.json"]


def _config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = dict(
        epochs=4, max_steps=6, batch_size=64, dim=16, term_dim=16, hidden=16, history_heads=2, graph_dim=8,
        t5_d_model=16, t5_d_ff=32, t5_layers=1, t5_heads=2, tokenizer_vocab=300, pretrain_max_pairs=64,
        word_buckets=512, bigram_buckets=256, trigram_buckets=256, uniform_negatives=16, dynamic_pool=64,
        dynamic_negatives=2, dynamic_refresh=2, warmup_fraction=0.0, progress=False, text_max_len=16,
    )
    values.update(overrides)
    return TrainConfig.from_flat(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate

    out = tmp_path_factory.mktemp("world")
    generate(out, seed=1, n_products=120, n_users=40, n_queries=40, n_events=2500, progress=False)
    return load_dataset(out)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    metrics = train(world, run, _config())
    return run, metrics


def test_run_directory_holds_the_contract_files(trained):
    run, metrics = trained
    for name in RUN_FILES:
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["schema_version"] == 2 and config["model"]["personalized"] is True
    assert config["featurizer"]["word_buckets"] == 512
    assert config["run"]["term_vocab_size"] == 1 + 512 + 256 + 256
    assert metrics["steps"] == 6 and metrics["simulated"] is True
    assert metrics["pretrain"]["steps"] >= 1
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert thresholds["click"] < thresholds["purchase"]


def test_load_run_round_trip(trained, world):
    run_dir, _ = trained
    run = load_run(run_dir, world)
    products = run.encode_products(world.catalog)
    assert products.shape == (world.catalog.num_rows, 16) and products.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(products, axis=1), 1.0, atol=1e-5)
    events = world.log.slice(world.log.num_rows - 50, 50)
    inputs = run.event_query_inputs(events, world)
    assert tuple(inputs) == QUERY_INPUTS and inputs["hist_item_type"].dtype == np.int64
    q = run.encode_queries(inputs)
    plain = run.encode_queries(run.event_query_inputs(events, world, personalized=False))
    assert q.shape == (50, 16) and np.isfinite(q).all()
    assert np.abs(q - plain).max() > 1e-4  # user features matter to the personalised model
    # A second load gives identical vectors (weights really come from the run directory).
    again = load_run(run_dir).encode_queries(inputs)
    np.testing.assert_array_equal(q, again)


def test_query_inputs_handles_unseen_queries_and_signed_out_users(trained, world):
    run = load_run(trained[0])
    pid = world.catalog.column("product_id")[0].as_py()
    inputs = run.query_inputs(
        ["zzqx never seen query", "necklace"],
        [None, {"products": [pid, "no-such-product"], "types": ["purchase", 1], "queries": ["gift"], "country": "US"}],
    )
    assert inputs["query_graph_mask"][0] == 0.0
    assert inputs["hist_item_type"][0].sum() == 0 and inputs["hist_item_type"][1, 0] == 4
    v = run.encode_queries(inputs)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_cli_trains_the_ablation(world, tmp_path):
    from upper_fast.cli import main

    src = tmp_path / "data"
    from upper_fast_train.simulate import generate

    generate(src, seed=2, n_products=80, n_users=20, n_queries=20, n_events=1200, progress=False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_config().to_dict()))  # a whole config (schema_version): no preset applied
    rc = main(["train", str(src), str(tmp_path / "run"), "--config", str(cfg), "--max-steps", "2", "--no-personalization", "--no-pretrain", "--no-progress"])
    assert rc == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["personalized"] is False and config["text"]["pretrain"] is False
    assert config["loop"]["max_steps"] == 2
    assert config["run"]["data_dir"] == str(src.resolve())  # `upper-fast eval RUN` finds the data from here


def test_graph_walks_and_epochs_reach_the_graph_embeddings(world, tmp_path, monkeypatch):
    import upper_fast_train.graph as graph

    seen: dict[str, object] = {}
    real = graph.train_graph_embeddings

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(graph, "train_graph_embeddings", spy)
    train(world, tmp_path / "run", _config(max_steps=1, graph_walks_per_node=1, graph_epochs=1, graph_workers=1))
    assert seen["walks_per_node"] == 1 and seen["epochs"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["graph"]["graph_epochs"] == 1
    for bad in ({"graph_walks_per_node": 0}, {"graph_epochs": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig.from_flat(**bad)
