"""Catalogue encoding on Ray Data (upper_fast_train.ray_encode): a local Ray runtime with 2 CPUs gives
the same bits as the single-process export, and a Ray address that does not answer fails fast."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray", reason="catalogue encoding on Ray needs the [scale] extra (ray[data])")
pytest.importorskip("ray.data", reason="catalogue encoding on Ray needs ray[data]")

from upper_fast_train import TrainConfig, load_run, train  # noqa: E402
from upper_fast_train.export import encode_products, encode_chunk_rows, merge_product_shards  # noqa: E402
from upper_fast_train.ray_encode import ProductEncoder, connect_ray, encode_catalogue_ray  # noqa: E402

N_PRODUCTS = 4500  # > one export chunk (4096 rows), so both Ray actors get work


def _config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = dict(
        epochs=1, max_steps=2, batch_size=64, dim=16, term_dim=16, hidden=16, history_heads=2, graph_dim=8,
        t5_d_model=16, t5_d_ff=32, t5_layers=1, t5_heads=2, tokenizer_vocab=300, pretrain=False,
        word_buckets=512, bigram_buckets=256, trigram_buckets=256, uniform_negatives=16, dynamic_pool=64,
        dynamic_negatives=2, dynamic_refresh=2, warmup_fraction=0.0, progress=False, text_max_len=16,
    )
    values.update(overrides)
    return TrainConfig.from_flat(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from upper_fast_train.simulate import generate

    out = tmp_path_factory.mktemp("world")
    generate(out, seed=3, n_products=N_PRODUCTS, n_users=40, n_queries=60, n_events=3000, progress=False)
    return out


@pytest.fixture(scope="module")
def world(world_dir):
    from upper_fast.data import load_dataset

    return load_dataset(world_dir)


@pytest.fixture(scope="module", params=["frozen-text-encoder", "trained-text-encoder"])
def run_dir(request, world, tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    train(world, run, _config(freeze_text_encoder=request.param == "frozen-text-encoder"))
    return run


@pytest.fixture(scope="module")
def local_ray():
    connect_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_vectors_are_the_single_process_bits(world, run_dir, local_ray, tmp_path):
    catalog = world.catalog
    reference = encode_products(load_run(run_dir), catalog, batch_size=512, progress=False)
    report = encode_catalogue_ray(run_dir, catalog, tmp_path, workers=2)
    assert len(report["shards"]) == -(-N_PRODUCTS // encode_chunk_rows(512)) == 2
    merged = merge_product_shards(tmp_path, catalog.num_rows)
    assert merged.shape == reference.shape == (N_PRODUCTS, 16)
    assert merged.dtype == np.float32
    np.testing.assert_array_equal(merged, reference)  # bit for bit, not approximately
    assert report["products"] == N_PRODUCTS and report["products_per_s"] > 0


@pytest.mark.slow
def test_encoder_is_a_map_batches_class(world, run_dir, local_ray):
    """The callable class in a user's own pipeline: unchunked batches match up to float rounding."""
    import ray.data

    import pyarrow as pa

    catalog = world.catalog.slice(0, 700)
    reference = encode_products(load_run(run_dir), catalog, batch_size=512, progress=False)
    table = catalog.append_column("row", pa.array(np.arange(700, dtype=np.int64)))
    ds = ray.data.from_arrow(table).map_batches(ProductEncoder, fn_constructor_kwargs={"run_dir": str(run_dir)},
                                                batch_size=256, batch_format="pyarrow", concurrency=2, num_cpus=1)
    got = ds.take_all()
    rows = np.array([r["row"] for r in got])
    vectors = np.stack([r["vector"] for r in got])
    assert sorted(rows.tolist()) == list(range(700))
    np.testing.assert_allclose(vectors, reference[rows], atol=1e-5)


def test_encoder_rejects_pandas_batches(run_dir):
    enc = ProductEncoder(run_dir)
    with pytest.raises(TypeError, match="batch_format='pyarrow'"):
        enc({"product_id": np.array(["a"])})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_address_that_does_not_answer_fails_fast_naming_the_fix(world, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    was_running = ray.is_initialized()
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"does not answer.*ray start --head.*leave ADDRESS out"):
        encode_catalogue_ray(run, world.catalog, tmp_path / "shards", address=f"127.0.0.1:{_closed_port()}",
                             timeout_s=1.0)
    assert time.perf_counter() - t0 < 10
    assert ray.is_initialized() == was_running and not (tmp_path / "shards").exists()
    with pytest.raises(ConnectionError, match="not HOST:PORT"):
        connect_ray("nonsense", timeout_s=1.0)


def test_bad_arguments(world, run_dir, tmp_path):
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        encode_catalogue_ray(run_dir, world.catalog, tmp_path, workers=0)
    with pytest.raises(FileNotFoundError, match="not a training run"):
        encode_catalogue_ray(tmp_path, world.catalog, tmp_path)


def test_encoder_from_shipped_run_files_gives_the_same_vectors(world, run_dir):
    """What cluster workers get: the run's files as bytes (no shared filesystem), not the checkpoint."""
    from upper_fast_train.ray_encode import pack_run

    files = pack_run(run_dir)
    assert "config.json" in files and "model.safetensors" in files
    assert not any(name.startswith(("checkpoint", "text_cache")) for name in files)
    batch = world.catalog.slice(0, 300)
    a = ProductEncoder(run_dir)(batch)
    b = ProductEncoder(run_files=files)(batch)
    np.testing.assert_array_equal(a["vector"], b["vector"])
    np.testing.assert_array_equal(a["row"], np.arange(300))
    with pytest.raises(ValueError, match="one of the two"):
        ProductEncoder()


def test_export_ray_address_that_does_not_answer_is_one_clear_line(world_dir, run_dir, tmp_path, capsys):
    from upper_fast.cli import main

    rc = main(["export", str(run_dir), str(tmp_path / "bundle"), "--data", str(world_dir), "--no-progress",
               "--ray", f"127.0.0.1:{_closed_port()}"])
    err = capsys.readouterr().err
    assert rc == 2 and "upper-fast export: error: Ray at 127.0.0.1:" in err and "ray start --head" in err
    assert not (tmp_path / "bundle").exists()
