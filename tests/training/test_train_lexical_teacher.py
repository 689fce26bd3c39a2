"""The BM25 distillation teacher: equal to bm25s' scores, and wired into the training loop."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
bm25s = pytest.importorskip("bm25s")

from _train_synthetic import N_PRODUCTS, tiny_config, tiny_encoder, tiny_vocab, tiny_world  # noqa: E402

from upper_fast_train.lexical_teacher import bm25_matrices, bm25_scores  # noqa: E402
from upper_fast_train.loop import build_model, train_model  # noqa: E402

CORPUS = ["white kitchen faucet with sprayer", "black door knob", "white paint 1 gallon",
          "kitchen sink faucet chrome faucet", "outdoor white light"]
QUERIES = ["white faucet", "door", "kitchen faucet chrome", "nothing here", "the white"]


def test_bm25_matrices_score_like_bm25s():
    p, q = bm25_matrices(CORPUS, QUERIES)
    ours = bm25_scores(p, q, np.arange(len(QUERIES)), np.arange(len(CORPUS)))
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(CORPUS, stopwords="en", show_progress=False), show_progress=False)
    for i, query in enumerate(QUERIES):
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        ref = np.zeros(len(CORPUS))
        if tokens[0]:
            docs, scores = retriever.retrieve(tokens, k=len(CORPUS), show_progress=False)
            ref[docs[0]] = scores[0]
        np.testing.assert_allclose(ours[i], ref, rtol=1e-5, atol=1e-6)
    assert ours[3].max() == 0  # no corpus word
    # row / column selection
    np.testing.assert_allclose(bm25_scores(p, q, np.array([2, 0]), np.array([3, 0])), ours[[2, 0]][:, [3, 0]], rtol=1e-6)


def _tiny_bm25(cfg, data):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(30)]
    corpus = [" ".join(rng.choice(words, 4)) for _ in range(N_PRODUCTS)]
    nq = len(data.queries.query_terms)
    queries = [" ".join(rng.choice(words, 2)) for _ in range(nq)]
    return bm25_matrices(corpus, queries)


def _no_encoder_teacher_world(cfg):
    """The tiny world with no query encoder vectors (BM25 is the only possible teacher) and a
    `run(config)` that trains a fresh seeded model on it."""
    data, products = tiny_world(cfg)
    nq = len(data.queries.query_terms)
    data.query_text_ids = np.zeros((nq, cfg.text.text_max_len), np.int64)
    data.query_text_mask = np.zeros_like(data.query_text_ids)

    def run(c):
        torch.manual_seed(c.loop.seed)
        return train_model(build_model(c, 0, tiny_vocab(), tiny_encoder(c)), data, products, c)

    return data, run


def test_training_with_the_bm25_teacher_runs_and_uses_it():
    cfg = tiny_config(max_steps=3, distill_weight=1.0, distill_bm25=2.0)
    data, run = _no_encoder_teacher_world(cfg)
    with pytest.raises(ValueError, match="bm25"):
        run(cfg)
    data.bm25_products, data.bm25_queries = _tiny_bm25(cfg, data)
    with_bm25 = run(cfg)
    assert all(np.isfinite(h["distill"]) and h["distill"] > 0 for h in with_bm25["loss_history"])
    # without BM25 and without encoder vectors, no row has a teacher: the term is 0
    without = run(tiny_config(max_steps=3, distill_weight=1.0))
    assert all(h["distill"] == 0 for h in without["loss_history"])


def test_distill_bm25_config_is_validated():
    with pytest.raises(ValueError, match="distill_bm25"):
        tiny_config(distill_bm25=-1.0)
    with pytest.raises(ValueError, match="needs distill_weight"):
        tiny_config(distill_bm25=1.0)


def test_bm25_top_rows_are_the_best_scores_in_order():
    from upper_fast_train.lexical_teacher import bm25_top_rows

    p, q = bm25_matrices(CORPUS, QUERIES)
    full = bm25_scores(p, q, np.arange(len(QUERIES)), np.arange(len(CORPUS)))
    for chunk in (1, 2, 1024):
        top = bm25_top_rows(p, q, 3, chunk=chunk)
        assert top.shape == (len(QUERIES), 3)
        for i in range(len(QUERIES)):
            want = [j for j in np.argsort(-full[i], kind="stable") if full[i, j] > 0][:3]
            got = [j for j in top[i] if j >= 0]
            np.testing.assert_allclose(full[i, got], full[i, want], rtol=1e-6)  # same scores, best first
            assert (top[i, len(got):] == -1).all()
    assert (bm25_top_rows(p, q, 3)[3] == -1).all()  # no corpus word: no column
    assert bm25_top_rows(p, q, 99).shape == (len(QUERIES), 99)  # k past the catalogue: -1 padded
    with pytest.raises(ValueError, match="k must be"):
        bm25_top_rows(p, q, 0)


def test_training_with_bm25_teacher_columns_adds_them_to_the_distillation():
    from upper_fast_train.lexical_teacher import bm25_top_rows

    cfg = tiny_config(max_steps=3, distill_weight=1.0, distill_bm25=1.0, distill_bm25_negatives=4)
    data, run = _no_encoder_teacher_world(cfg)
    data.bm25_products, data.bm25_queries = _tiny_bm25(cfg, data)

    with pytest.raises(ValueError, match="bm25_top"):
        run(cfg)
    data.bm25_top = bm25_top_rows(data.bm25_products, data.bm25_queries, 4)
    assert (data.bm25_top >= 0).any()
    with_cols = run(cfg)
    without = run(tiny_config(max_steps=3, distill_weight=1.0, distill_bm25=1.0))
    assert all(np.isfinite(h["distill"]) for h in with_cols["loss_history"])
    assert with_cols["loss_history"][0]["distill"] != pytest.approx(without["loss_history"][0]["distill"], rel=1e-4)
    # with the softmax contrast on too: the extra columns enter it (other rows' teacher columns are negatives)
    both = run(tiny_config(max_steps=3, distill_weight=1.0, distill_bm25=1.0, distill_bm25_negatives=4, contrast_weight=1.0))
    plain = run(tiny_config(max_steps=3, distill_weight=1.0, distill_bm25=1.0, contrast_weight=1.0))
    assert all(np.isfinite(h["contrast"]) for h in both["loss_history"])
    assert both["loss_history"][0]["contrast"] != pytest.approx(plain["loss_history"][0]["contrast"], rel=1e-6)


def test_distill_bm25_negatives_config_is_validated():
    with pytest.raises(ValueError, match="distill_bm25_negatives must be"):
        tiny_config(distill_bm25_negatives=-1)
    with pytest.raises(ValueError, match="needs distill_weight"):
        tiny_config(distill_bm25_negatives=4)


def test_lexical_columns_keep_distilled_rows_and_drop_group_positives():
    from upper_fast_train.loop import lexical_columns

    cfg = tiny_config(distill_weight=1.0, distill_bm25_negatives=3)
    data, _ = tiny_world(cfg)
    nq = len(data.queries.query_terms)
    data.bm25_top = np.tile(np.array([[0, 1, 2]], np.int64), (nq, 1))
    idx = np.arange(8)
    qrows = data.queries.event_query[idx]
    has = np.zeros(nq, dtype=bool)
    has[qrows[:4]] = True
    excluded = np.full((8, 1), -1, np.int64)
    excluded[0, 0] = 1  # row 0's group engaged with product 1
    cols = lexical_columns(data, idx, has, excluded, cfg)
    for i in range(8):
        keep = data.labels[idx[i]] > 0 and has[qrows[i]]
        want = [-1, -1, -1] if not keep else [0, -1 if i == 0 else 1, 2]
        assert cols[i].tolist() == want, (i, cols[i])
    # with BM25 in the teacher every positive row takes part
    cols = lexical_columns(data, idx, np.zeros(nq, dtype=bool), excluded, tiny_config(distill_weight=1.0, distill_bm25=1.0))
    assert [bool((c >= 0).any()) for c in cols] == [bool(data.labels[i] > 0) for i in idx]
    data.bm25_top = None
    with pytest.raises(ValueError, match="bm25_top"):
        lexical_columns(data, idx, has, excluded, cfg)
