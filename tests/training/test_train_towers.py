"""Towers: shapes, unit norm, padding masks, unseen queries, signed-out users, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _train_synthetic import single_thread, tiny_config, tiny_encoder, tiny_vocab, tiny_world  # noqa: E402,F401

from upper_fast_train.towers import QUERY_INPUTS, UpperModel  # noqa: E402


def _model(**overrides: object) -> tuple[UpperModel, object]:
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    v = tiny_vocab()
    return UpperModel(cfg, tiny_encoder(cfg), v.n_countries, v.n_categories, len(v.quality_columns)).eval(), cfg


def _query_batch(cfg, idx=np.arange(6), personalized=True):
    data, products = tiny_world(cfg)
    return {k: torch.from_numpy(v) for k, v in data.queries.take(idx, products.product_graph, personalized).items()}, products


def test_query_inputs_match_the_onnx_contract():
    model, cfg = _model()
    q, _ = _query_batch(cfg)
    assert tuple(q) == QUERY_INPUTS
    assert q["query_terms"].dtype == torch.int64 and q["query_terms"].shape == (6, cfg.featurizer.max_query_terms)
    assert q["hist_item_graph"].shape == (6, cfg.model.history_items, cfg.graph.graph_dim) and q["hist_item_graph"].dtype == torch.float32
    assert q["hist_query_terms"].shape == (6, cfg.model.history_queries, cfg.featurizer.max_query_terms)
    assert q["query_graph_mask"].dtype == torch.float32 and q["user_country"].shape == (6,)


def test_towers_output_unit_vectors():
    model, cfg = _model()
    q, products = _query_batch(cfg)
    with torch.no_grad():
        qv = model.query_tower(**q)
        pv = model.product_tower(**{k: torch.from_numpy(v) for k, v in products.take(np.arange(10)).items()})
    assert qv.shape == (6, cfg.model.dim) and pv.shape == (10, cfg.model.dim)
    np.testing.assert_allclose(qv.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(pv.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_signed_out_unseen_and_all_padding_rows_are_finite():
    model, cfg = _model()
    q, _ = _query_batch(cfg)
    q["hist_item_type"][:] = 0
    q["hist_item_graph"][:] = 0
    q["hist_query_terms"][:] = 0
    q["user_country"][:] = 0
    q["query_graph"][:] = 0
    q["query_graph_mask"][:] = 0
    q["query_terms"][0] = 0  # even an empty query
    with torch.no_grad():
        out = model.query_tower(**q)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_padding_history_does_not_change_the_vector():
    """Padded history slots are masked out: their contents must not matter."""
    model, cfg = _model()
    q, _ = _query_batch(cfg)
    q["hist_item_type"][:, 2:] = 0
    with torch.no_grad():
        a = model.query_tower(**q)
        q["hist_item_graph"][:, 2:] = 123.0
        b = model.query_tower(**q)
    torch.testing.assert_close(a, b)


def test_history_changes_the_personalized_vector_only():
    model, cfg = _model()
    q, _ = _query_batch(cfg)
    blank = {k: v.clone() for k, v in q.items()}
    blank["hist_item_type"][:] = 0
    blank["hist_query_terms"][:] = 0
    blank["user_country"][:] = 0
    with torch.no_grad():
        assert (model.query_tower(**q) - model.query_tower(**blank)).abs().max() > 1e-4
    plain, _ = _model(personalized=False)
    with torch.no_grad():
        torch.testing.assert_close(plain.query_tower(**q), plain.query_tower(**blank))


def test_term_table_is_shared_between_towers():
    model, _ = _model()
    assert model.query_tower.terms.embedding.weight is model.product_tower.terms.embedding.weight


def test_term_type_scales_weigh_words_bigrams_and_trigrams():
    from upper_fast_train.config import TrainConfig
    from upper_fast_train.towers import TermBag

    torch.manual_seed(0)
    bag = TermBag(10, 4, type_bounds=(3, 6))  # words 1..3, bigrams 4..6, trigrams 7..9
    assert bag._types(torch.arange(10)).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    ids = torch.tensor([[2, 5, 8, 0]])
    e = bag.embedding.weight.detach()
    with torch.no_grad():
        torch.testing.assert_close(bag(ids), ((e[2] + e[5] + e[8]) / 3).unsqueeze(0))  # scales start at 1
        bag.type_log_scale.copy_(torch.log(torch.tensor([2.0, 1.0, 0.5])))
        torch.testing.assert_close(bag(ids), ((2 * e[2] + e[5] + 0.5 * e[8]) / 3).unsqueeze(0))
        torch.testing.assert_close(bag.table()[[2, 5, 8]], torch.stack([2 * e[2], e[5], 0.5 * e[8]]))
    model, cfg = _model(term_type_scale=True)
    assert model.terms.type_log_scale is not None and model.terms.type_bounds == (cfg.featurizer.word_buckets, cfg.featurizer.word_buckets + cfg.featurizer.bigram_buckets)
    assert _model()[0].terms.type_log_scale is None and "terms.type_log_scale" not in _model()[0].state_dict()
    assert TrainConfig.from_dict({"term_vocab_size": 99, "term_type_scale": True}).experimental.term_type_scale
    assert not TrainConfig.from_dict({"term_vocab_size": 99}).experimental.term_type_scale


def test_idf_row_scales_follow_bm25_idf():
    from upper_fast_train.towers import TermBag

    bag = TermBag(6, 4, row_scale=True)
    # 4 documents: id 1 in all (twice in one: counted once), id 2 in one, id 3 in two, ids 4-5 in none.
    docs = np.array([[1, 1, 2, 0], [1, 3, 0, 0], [1, 3, 0, 0], [1, 0, 0, 0]])
    bag.set_idf(docs)
    n, df = 4, np.array([4, 4, 1, 2, 0, 0])  # id 0 (padding) is in every row
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    np.testing.assert_allclose(bag.row_scale.numpy(), idf / idf.max(), rtol=1e-6)
    e = bag.embedding.weight.detach()
    with torch.no_grad():
        s = bag.row_scale
        torch.testing.assert_close(bag(torch.tensor([[2, 1, 0]])), ((s[2] * e[2] + s[1] * e[1]) / 2).unsqueeze(0))
        torch.testing.assert_close(bag.table(), e * s[:, None])
    with pytest.raises(ValueError, match=r"ids in \[0, 6\)"):
        bag.set_idf(np.array([[7]]))
    with pytest.raises(ValueError, match="without row_scale"):
        TermBag(6, 4).set_idf(docs)
    model, cfg = _model(term_idf_scale=True)
    assert model.terms.row_scale is not None and "terms.row_scale" in model.state_dict()
    assert _model()[0].terms.row_scale is None and "terms.row_scale" not in _model()[0].state_dict()


def test_lexical_skip_is_one_map_shared_by_both_towers_and_old_runs_load_without_it():
    from upper_fast_train.config import TrainConfig

    model, cfg = _model()
    assert cfg.model.lexical_skip and model.lexical is not None
    assert model.query_tower.lexical is model.product_tower.lexical is model.lexical
    q, _ = _query_batch(cfg)
    with torch.no_grad():
        before = model.query_tower(**q)
        model.lexical.weight.mul_(3.0)
        after = model.query_tower(**q)
    assert not torch.allclose(before, after), "the query vector must depend on the lexical map"
    off, _ = _model(lexical_skip=False)
    assert off.lexical is None and "lexical.weight" not in off.state_dict()
    # A run's config.json written before the field existed (it has term_vocab_size) loads with it off;
    # a user's partial config without run keys keeps the default.
    assert TrainConfig.from_dict({"term_dim": 16, "term_vocab_size": 99}).model.lexical_skip is False
    assert TrainConfig.from_dict({"term_dim": 16}).model.lexical_skip is True


def test_user_skip_adds_a_direct_user_product_affinity_and_old_runs_load_without_it():
    """UserSkip = C[user_country] + H (type-weighted mean history graph vector); ProductSkip =
    S[shop_country] + W [graph, term bag]: each tower's output moves by exactly that term, and the
    query side depends on the country and on the history items, never on padded slots."""
    import torch.nn.functional as F

    from upper_fast_train.config import TrainConfig

    model, cfg = _model()
    assert cfg.model.user_skip and model.query_tower.user_skip is not None and model.product_tower.user_skip is not None
    q, products = _query_batch(cfg)
    p = {k: torch.from_numpy(v) for k, v in products.take(np.arange(10)).items()}
    with torch.no_grad():
        skip = model.query_tower.user_skip
        # the skip term by hand: a per-type weighted mean over the real history items
        t = q["hist_item_type"]
        w = skip.type_weight.weight[t] * (t > 0).unsqueeze(-1)
        mean = (q["hist_item_graph"] * w).sum(1) / (t > 0).sum(1, keepdim=True).clamp_min(1)
        torch.testing.assert_close(skip(q["hist_item_graph"], t, q["user_country"]),
                                   skip.country(q["user_country"]) + skip.hist(mean))
        padded = {k: v.clone() for k, v in q.items()}
        padded["hist_item_type"][:, 2:] = 0
        a = skip(padded["hist_item_graph"], padded["hist_item_type"], padded["user_country"])
        padded["hist_item_graph"][:, 2:] = 7.0
        torch.testing.assert_close(a, skip(padded["hist_item_graph"], padded["hist_item_type"], padded["user_country"]))
        # the towers' outputs are the normalised sum of the old output and the skip terms
        qv, pv = model.query_tower(**q), model.product_tower(**p)
        skip.country.weight.zero_()
        skip.hist.weight.zero_()
        model.product_tower.user_skip.country.weight.zero_()
        model.product_tower.user_skip.proj.weight.zero_()
        q0, p0 = model.query_tower(**q), model.product_tower(**p)
    assert not torch.allclose(qv, q0) and not torch.allclose(pv, p0)
    off, _ = _model(user_skip=False)
    assert off.query_tower.user_skip is None and off.product_tower.user_skip is None
    assert not any("user_skip" in k for k in off.state_dict())
    with torch.no_grad():  # the same weights without the skip give the zeroed-skip output
        off.load_state_dict({k: v for k, v in model.state_dict().items() if "user_skip" not in k})
        torch.testing.assert_close(off.query_tower(**q), q0)
        torch.testing.assert_close(off.product_tower(**p), p0)
    # the country rows alone move the query vector: C[user_country] is a signal for signed-out users too
    model2, _ = _model()
    with torch.no_grad():
        other = {k: v.clone() for k, v in q.items()}
        other["user_country"] = (q["user_country"] + 1) % model2.query_tower.user_skip.country.num_embeddings
        assert (F.normalize(model2.query_tower(**q)) - model2.query_tower(**other)).abs().max() > 1e-4
    assert TrainConfig.from_dict({"term_dim": 16, "term_vocab_size": 99}).model.user_skip is False
    assert TrainConfig.from_dict({"term_dim": 16}).model.user_skip is True


def test_query_tower_exports_to_onnx_with_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, cfg = _model()
    q, _ = _query_batch(cfg, np.arange(3))
    q["hist_item_type"][1] = 0  # one row without any history
    q["hist_query_terms"][1] = 0
    path = tmp_path / "query_tower.onnx"
    torch.onnx.export(
        model.query_tower, (), str(path), kwargs=q, input_names=list(QUERY_INPUTS), output_names=["query_vector"],
        dynamic_axes={k: {0: "batch"} for k in (*QUERY_INPUTS, "query_vector")}, dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    big, _ = _query_batch(cfg, np.arange(7))
    with torch.no_grad():
        expected = model.query_tower(**big).numpy()
    got = session.run(["query_vector"], {k: v.numpy() for k, v in big.items()})[0]
    assert got.shape == (7, cfg.model.dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_import_without_torch_names_the_extra():
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None\ntry:\n    from upper_fast_train import train\nexcept ImportError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install upper-fast-train" in out.stdout, out.stderr


def test_ablation_export_keeps_all_seven_inputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, cfg = _model(personalized=False)
    q, _ = _query_batch(cfg, np.arange(3))
    path = tmp_path / "ablation.onnx"
    torch.onnx.export(
        model.query_tower, (), str(path), kwargs=q, input_names=list(QUERY_INPUTS), output_names=["query_vector"],
        dynamic_axes={k: {0: "batch"} for k in (*QUERY_INPUTS, "query_vector")}, dynamo=False,
    )
    names = [i.name for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()]
    assert names == list(QUERY_INPUTS)


def test_learned_term_weights_make_the_bag_a_weighted_mean():
    from upper_fast_train.config import TrainConfig
    from upper_fast_train.towers import TERM_LOGIT_BOUND, TermBag

    torch.manual_seed(0)
    bag = TermBag(10, 4, weighted=True)
    e = bag.embedding.weight.detach()
    ids = torch.tensor([[2, 5, 8, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(bag(ids)[0], (e[2] + e[5] + e[8]) / 3)  # weights start at 1: the plain mean
        assert bag(ids)[1].eq(0).all()  # an all-padding bag stays zero
        bag.weight_logit.weight[[2, 5, 8], 0] = torch.log(torch.tensor([4.0, 1.0, 0.5]))
        torch.testing.assert_close(bag(ids)[0], (4 * e[2] + e[5] + 0.5 * e[8]) / 5.5)
        bag.weight_logit.weight[2, 0] = 50.0  # clamped to exp(4)
        w2 = float(np.exp(TERM_LOGIT_BOUND))
        torch.testing.assert_close(bag(ids)[0], (w2 * e[2] + e[5] + 0.5 * e[8]) / (w2 + 1.5))
        w = bag.pool_weights()
        assert w[0] == 0 and abs(float(w[2]) - w2) < 1e-3 and w[1] == 1.0
    # the weights learn: a gradient reaches the logits of the used ids only
    bag(ids).pow(2).sum().backward()
    grad = bag.weight_logit.weight.grad[:, 0]
    assert grad[[5, 8]].abs().min() > 0 and grad[[0, 1, 3, 4, 6, 7, 9]].eq(0).all()
    model, _ = _model(term_weights=True)
    assert model.terms.weight_logit is not None and "terms.weight_logit.weight" in model.state_dict()
    assert _model()[0].terms.weight_logit is None
    assert not TrainConfig.from_dict({"term_vocab_size": 99}).experimental.term_weights  # older runs load without them
    sparse = TermBag(10, 4, sparse=True, weighted=True)
    sparse(ids).sum().backward()
    assert sparse.weight_logit.weight.grad.is_sparse


def test_history_item_vectors_add_a_token_term_and_a_typed_mean_skip():
    """experimental.history_item_vectors: the eighth input (the history items' second vectors) enters
    the history tokens and, as a type-weighted mean through a zero-initialised matrix, the output; the
    tower refuses to run without it and the non-personalised ablation ignores it."""
    from upper_fast_train.towers import HIST_ITEM_VECTOR

    model, cfg = _model(history_item_vectors="product")
    tower = model.query_tower
    assert tower.input_names == QUERY_INPUTS + (HIST_ITEM_VECTOR,)
    data, products = tiny_world(cfg)
    idx = np.flatnonzero((data.queries.hist_items >= 0).any(1))[:6]  # rows with a history
    assert len(idx) == 6
    vectors = np.random.default_rng(3).standard_normal((len(products), cfg.model.dim)).astype(np.float32)
    q = {k: torch.from_numpy(v) for k, v in data.queries.take(idx, products.product_graph, True, vectors).items()}
    assert tuple(q) == tower.input_names and q[HIST_ITEM_VECTOR].shape == (6, cfg.model.history_items, cfg.model.dim)
    items = data.queries.hist_items[idx]
    np.testing.assert_array_equal(q[HIST_ITEM_VECTOR].numpy(), vectors[np.maximum(items, 0)] * (items >= 0)[..., None])
    with pytest.raises(ValueError, match="hist_item_vector"):
        tower(**{k: v for k, v in q.items() if k != HIST_ITEM_VECTOR})
    with torch.no_grad():
        base = tower(**q)
        moved = {k: v.clone() for k, v in q.items()}
        moved[HIST_ITEM_VECTOR] = moved[HIST_ITEM_VECTOR] + 1.0 * (moved["hist_item_type"] > 0).unsqueeze(-1)
        assert (tower(**moved) - base).abs().max() > 1e-4  # the token term reads the vectors
        padded = {k: v.clone() for k, v in q.items()}
        padded[HIST_ITEM_VECTOR] = padded[HIST_ITEM_VECTOR] + 5.0 * (padded["hist_item_type"] == 0).unsqueeze(-1)
        torch.testing.assert_close(tower(**padded), base)  # padded slots are never read
        tower.item_vector_proj.weight.zero_()
        torch.testing.assert_close(tower(**moved), tower(**q))  # the skip starts at zero
        tower.item_vector_skip.weight.normal_()
        assert (tower(**moved) - tower(**q)).abs().max() > 1e-4
    blank, _ = _model(history_item_vectors="product", personalized=False)
    with torch.no_grad():
        torch.testing.assert_close(blank.query_tower(**moved), blank.query_tower(**q))
    with pytest.raises(ValueError, match="history_interactions_run"):
        tiny_config(history_item_vectors="interactions")
    with pytest.raises(ValueError, match="must be 'none', 'product' or 'interactions'"):
        tiny_config(history_item_vectors="graph")
    with pytest.raises(ValueError, match="history_vector_dim must be 0 or model.dim"):
        tiny_config(history_item_vectors="product", history_vector_dim=7)
    with pytest.raises(ValueError, match="history_vector_refresh"):
        tiny_config(history_item_vectors="product", history_vector_refresh=0)


def test_training_refreshes_the_history_vectors_from_the_product_tower():
    from upper_fast_train.encode import encode_product_rows
    from upper_fast_train.loop import train_model

    cfg = tiny_config(history_item_vectors="product", history_vector_refresh=3, epochs=1, max_steps=4)
    data, products = tiny_world(cfg)
    model, _ = _model(history_item_vectors="product", history_vector_refresh=3, epochs=1, max_steps=4)
    model.train()
    metrics = train_model(model, data, products, cfg)
    assert metrics["steps"] == 4
    assert products.history_vectors is not None and products.history_vectors.shape == (len(products), cfg.model.dim)
    assert float(model.query_tower.item_vector_skip.weight.abs().sum()) > 0  # it trained from zero
    # the last refresh (step 3) was before the last step's update: close to, not equal to, the final vectors
    final = encode_product_rows(model, products, np.arange(len(products)), torch.device("cpu"))
    assert not np.array_equal(products.history_vectors, final)
    assert "history_vectors" not in products.take(np.arange(3))
