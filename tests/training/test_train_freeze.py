"""TrainConfig.text.freeze_text_encoder: the text encoder gets no gradient, its pooled output is computed
once per product (optionally cached on disk), and load_run / encode_products give the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _train_synthetic import single_thread, tiny_config, tiny_encoder, tiny_vocab, tiny_world  # noqa: E402,F401

from upper_fast_train.loop import build_model, encode_product_rows, pooled_text_vectors, train_model  # noqa: E402


def _fresh(cfg):
    torch.manual_seed(cfg.loop.seed)
    return build_model(cfg, 0, tiny_vocab(), tiny_encoder(cfg))


def test_frozen_encoder_keeps_its_weights_and_trains_the_rest():
    cfg = tiny_config(epochs=2, freeze_text_encoder=True)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    enc_before = {k: v.clone() for k, v in model.product_tower.text_encoder.state_dict().items()}
    fuse_before = model.product_tower.fuse[0].weight.detach().clone()
    terms_before = model.terms.embedding.weight.detach().clone()
    metrics = train_model(model, data, products, cfg)
    assert metrics["steps"] > 0
    for k, v in model.product_tower.text_encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k
    assert not torch.equal(model.product_tower.fuse[0].weight, fuse_before)
    assert not torch.equal(model.terms.embedding.weight, terms_before)
    # The table now carries the pooled text, equal to what the encoder computes.
    assert products.text_pooled is not None and products.text_pooled.shape == (len(products), cfg.text.t5_d_model)
    with torch.no_grad():
        model.eval()
        direct = model.product_tower.pool_text(torch.from_numpy(products.text_ids), torch.from_numpy(products.text_mask))
    np.testing.assert_allclose(products.text_pooled, direct.numpy(), rtol=1e-5, atol=1e-5)


def test_pooled_vectors_give_the_same_product_vectors_as_the_encoder(tmp_path):
    cfg = tiny_config()
    _, products = tiny_world(cfg)
    model = _fresh(cfg).eval()
    rows = np.arange(len(products))
    full = encode_product_rows(model, products, rows, torch.device("cpu"))
    products.text_pooled = pooled_text_vectors(model, products, torch.device("cpu"), batch_size=7)
    cached = encode_product_rows(model, products, rows, torch.device("cpu"))
    np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)


def test_disk_cache_is_keyed_by_encoder_weights(tmp_path):
    cfg = tiny_config()
    _, products = tiny_world(cfg)
    model = _fresh(cfg)
    first = pooled_text_vectors(model, products, torch.device("cpu"), cache_dir=tmp_path)
    files = list(tmp_path.glob("text_pooled-*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), first)
    np.testing.assert_array_equal(pooled_text_vectors(model, products, torch.device("cpu"), cache_dir=tmp_path), first)
    with torch.no_grad():
        next(model.product_tower.text_encoder.parameters()).add_(0.5)
    pooled_text_vectors(model, products, torch.device("cpu"), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("text_pooled-*.npy"))) == 2


def test_bfloat16_pass_is_close_to_float32_and_cached_apart(tmp_path):
    cfg = tiny_config()
    _, products = tiny_world(cfg)
    model = _fresh(cfg)
    cpu = torch.device("cpu")
    f32 = pooled_text_vectors(model, products, cpu, cache_dir=tmp_path, batch_size=7)
    bf16 = pooled_text_vectors(model, products, cpu, cache_dir=tmp_path, batch_size=7, dtype=torch.bfloat16)
    assert bf16.dtype == np.float32 and bf16.shape == f32.shape
    assert not np.array_equal(bf16, f32)  # the pass really ran in bfloat16
    cos = (f32 * bf16).sum(1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(bf16, axis=1))
    assert cos.min() > 0.995, cos.min()
    assert len(list(tmp_path.glob("text_pooled-*.npy"))) == 2  # one cache file per dtype
    np.testing.assert_array_equal(
        pooled_text_vectors(model, products, cpu, cache_dir=tmp_path, dtype=torch.bfloat16), bf16)


def test_frozen_encode_dtype_resolution(monkeypatch):
    from upper_fast_train import encode

    cpu = torch.device("cpu")
    assert encode.frozen_encode_dtype("float32", cpu) == torch.float32
    assert encode.frozen_encode_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr(encode, "_cpu_has_native_bf16", lambda: True)
    assert encode.frozen_encode_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(encode, "_cpu_has_native_bf16", lambda: False)
    assert encode.frozen_encode_dtype("auto", cpu) == torch.float32
    with pytest.raises(ValueError, match="frozen_encode_dtype"):
        encode.frozen_encode_dtype("float16", cpu)
    with pytest.raises(ValueError, match="frozen_encode_dtype must be 'auto', 'float32' or 'bfloat16'"):
        tiny_config(frozen_encode_dtype="fp16")


def test_train_and_load_run_honour_the_option(tmp_path):
    pytest.importorskip("upper_fast_train.graph")
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate
    from upper_fast_train import TrainConfig, load_run, train

    world_dir = tmp_path / "world"
    generate(world_dir, seed=1, n_products=60, n_users=20, n_queries=20, n_events=800, progress=False)
    world = load_dataset(world_dir)
    cfg = TrainConfig.from_flat(
        epochs=1, max_steps=3, batch_size=32, dim=16, term_dim=16, hidden=16, history_heads=2, graph_dim=8,
        t5_d_model=16, t5_d_ff=32, t5_layers=1, t5_heads=2, tokenizer_vocab=200, pretrain=False,
        word_buckets=256, bigram_buckets=128, trigram_buckets=128, uniform_negatives=8, dynamic_pool=32,
        dynamic_negatives=2, dynamic_refresh=2, progress=False, text_max_len=12, graph_workers=1,
        freeze_text_encoder=True, text_cache_dir=str(tmp_path / "cache"), frozen_encode_dtype="float32",
    )
    metrics = train(world, tmp_path / "run", cfg)
    assert len(list((tmp_path / "cache").glob("text_pooled-*.npy"))) == 1  # the run's encoder, cached once
    assert metrics["frozen_encode_dtype"] == "float32"
    from upper_fast_train.commands.train import _time_split

    assert _time_split(metrics).endswith("(frozen text encoder in float32)")
    run = load_run(tmp_path / "run")
    assert run.train_config.text.freeze_text_encoder
    table = run.product_table(world.catalog)
    assert table.text_pooled is not None
    frozen = run.encode_products(world.catalog)
    run.train_config.text.freeze_text_encoder = False  # the plain path: through the (unchanged) encoder
    plain = run.encode_products(world.catalog)
    np.testing.assert_allclose(frozen, plain, rtol=1e-5, atol=1e-5)


def test_graph_dropout_blanks_graph_inputs_seeded():
    from upper_fast_train.loop import _step_loss

    cfg = tiny_config(query_graph_dropout=1.0, product_graph_dropout=1.0)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    seen = {}

    def spy(q_in, p_in):
        seen["q"], seen["p"] = q_in, p_in
        return model.query_tower(**q_in), model.product_tower(**p_in)

    spy.query_tower = model.query_tower  # type: ignore[attr-defined]
    timing = dict.fromkeys(("data", "mining", "forward", "backward", "optimizer"), 0.0)
    weights = {"uniform": 1.0, "inbatch": 0.0, "dynamic": 0.0}
    _step_loss(spy, data, products, np.arange(16), 0, weights, None, cfg, torch.device("cpu"), timing)
    assert float(seen["q"]["query_graph_mask"].abs().sum()) == 0 and float(seen["q"]["query_graph"].abs().sum()) == 0
    assert float(seen["p"]["product_graph_mask"].abs().sum()) == 0 and float(seen["p"]["product_graph"].abs().sum()) == 0
    cfg0 = tiny_config()  # default 0: inputs untouched
    _step_loss(spy, data, products, np.arange(16), 0, weights, None, cfg0, torch.device("cpu"), timing)
    assert float(seen["q"]["query_graph_mask"].sum()) == float(data.queries.take(np.arange(16), products.product_graph)["query_graph_mask"].sum())
    with pytest.raises(ValueError):
        tiny_config(query_graph_dropout=1.5)


def test_user_dropout_blanks_user_inputs_as_the_ablation_does():
    from upper_fast_train.loop import _step_loss

    cfg = tiny_config(user_dropout=1.0)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    seen = {}

    def spy(q_in, p_in):
        seen["q"] = q_in
        return model.query_tower(**q_in), model.product_tower(**p_in)

    spy.query_tower = model.query_tower  # type: ignore[attr-defined]
    timing = dict.fromkeys(("data", "mining", "forward", "backward", "optimizer"), 0.0)
    weights = {"uniform": 1.0, "inbatch": 0.0, "dynamic": 0.0}
    everything = data.queries.take(np.arange(len(data.product_rows)), products.product_graph, True)
    rows = np.flatnonzero(everything["hist_item_type"].any(1))[:16]  # rows with a history to blank
    full = data.queries.take(rows, products.product_graph, True)
    blank = data.queries.take(rows, products.product_graph, False)
    assert len(rows) == 16 and full["hist_item_type"].any(1).all()
    _step_loss(spy, data, products, rows, 0, weights, None, cfg, torch.device("cpu"), timing)
    for name in ("hist_item_graph", "hist_item_type", "hist_query_terms", "user_country"):
        np.testing.assert_array_equal(seen["q"][name].numpy(), blank[name], err_msg=name)
    np.testing.assert_array_equal(seen["q"]["query_terms"].numpy(), full["query_terms"])  # the query stays
    _step_loss(spy, data, products, rows, 0, weights, None, tiny_config(user_dropout=0.0), torch.device("cpu"), timing)
    np.testing.assert_array_equal(seen["q"]["hist_item_type"].numpy(), full["hist_item_type"])
    half = tiny_config(user_dropout=0.5)
    many = np.flatnonzero(everything["hist_item_type"].any(1))[:64]
    _step_loss(spy, data, products, many, 3, weights, None, half, torch.device("cpu"), timing)
    dropped = (seen["q"]["hist_item_type"].numpy() == 0).all(1)
    assert 0 < dropped.sum() < len(many)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="user_dropout"):
            tiny_config(user_dropout=bad)


def test_frozen_encoder_keeps_its_pooled_texts_in_the_run(tmp_path):
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate
    from upper_fast_train import TrainConfig, load_run, train

    generate(tmp_path / "world", seed=2, n_products=40, n_users=10, n_queries=10, n_events=400, progress=False)
    world = load_dataset(tmp_path / "world")
    cfg = TrainConfig.preset("tiny", max_steps=1, batch_size=16, freeze_text_encoder=True, progress=False,
                             graph_workers=1, tokenizer_vocab=200)
    train(world, tmp_path / "run", cfg)
    cached = list((tmp_path / "run" / "text_cache").glob("text_pooled-*.npy"))
    assert len(cached) == 1  # evaluation and export read it instead of encoding again
    assert load_run(tmp_path / "run").train_config.text.text_cache_dir == str((tmp_path / "run" / "text_cache").resolve())


def test_export_encodes_frozen_texts_in_float32_whatever_training_used(tmp_path):
    """Training may run the frozen passes in bfloat16; the vectors export writes (and evaluation
    scores) must still be the float32 ONNX product tower's, or export's parity check fails."""
    from upper_fast.data import load_dataset
    from upper_fast_train.export import export_product_files
    from upper_fast_train.simulate import generate
    from upper_fast_train import TrainConfig, load_run, train

    generate(tmp_path / "world", seed=3, n_products=40, n_users=10, n_queries=10, n_events=400, progress=False)
    world = load_dataset(tmp_path / "world")
    cfg = TrainConfig.preset("tiny", max_steps=1, batch_size=16, freeze_text_encoder=True, frozen_encode_dtype="bfloat16",
                             progress=False, graph_workers=1, tokenizer_vocab=200)
    train(world, tmp_path / "run", cfg)
    run = load_run(tmp_path / "run")
    table = run.product_table(world.catalog)
    f32 = pooled_text_vectors(run.model, table, run.device, None, dtype=torch.float32)
    np.testing.assert_array_equal(table.text_pooled, f32)
    vectors = run.encode_products(world.catalog)
    (tmp_path / "tower").mkdir()
    _, worst = export_product_files(run, world.catalog, vectors, run._graph_for(world.catalog).product_vectors,
                                    tmp_path / "tower")
    assert worst < 1e-4
