"""Short seeded trainings on the tiny synthetic world, against recorded numbers: every term of the
objective the presets turn on, its per-step values and the final weights.

The numbers in tests/regressions/train_objective.json were recorded from the loop before it was
split into composed loss terms; a change to the objective, the step's columns, the optimizer or its
schedule that moves them fails here. Regenerate (after a deliberate change only) with
UPPER_FAST_RECORD=1 python -m pytest tests/training/test_train_objective_regression.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _train_synthetic import N_PRODUCTS, single_thread, tiny_config, tiny_encoder, tiny_vocab, tiny_world  # noqa: E402,F401

from upper_fast_train.loop import build_model, train_model  # noqa: E402

RECORD = Path(__file__).resolve().parents[1] / "regressions" / "train_objective.json"
STEPS_RECORDED = 4

# The `logs` preset's objective (hinge, softmax contrast, distillation, shown negatives, the three
# negative sources) with its loop (sparse term gradients, 10x term lr, cosine, query graph dropout,
# frozen encoder); then every other switch of the objective.
SCENARIOS: dict[str, dict[str, object]] = {
    "logs": dict(epochs=1, contrast_weight=1.0, contrast_temperature=0.03, distill_weight=1.0, distill_temperature=0.05,
                 shown_negatives=2, dynamic_negatives=2, sparse_term_grads=True, term_lr_scale=10.0, lr_schedule="cosine",
                 query_graph_dropout=0.25, product_graph_dropout=0.1, freeze_text_encoder=True),
    "experimental": dict(epochs=1, personal_contrast=1.0, personal_contrast_skip_only=True, contrast_weight=0.5,
                         contrast_type_weights=[1.0, 2.0, 3.0, 4.0], distill_weight=0.7, distill_bm25=1.0,
                         distill_bm25_negatives=3, shown_negatives=0, dynamic_negatives=1, term_weights=True, term_type_scale=True,
                         exclude_query_positives=False, lr_schedule="linear"),
    "paper": dict(epochs=1, personal_contrast=0.5, shown_negatives=0, dynamic_negatives=2, lexical_skip=False,
                  user_skip=False),
}


def _world(name: str, cfg):
    data, products = tiny_world(cfg)
    rng = np.random.default_rng(5)
    data.shown_rows = np.stack([(data.product_rows + rng.integers(1, N_PRODUCTS, len(data))) % N_PRODUCTS,
                                np.full(len(data), -1)], axis=1)
    data.shown_rows[data.labels == 0] = -1
    nq = len(data.queries.query_terms)
    if cfg.objective.distill_weight > 0:
        ids = np.zeros((nq, cfg.text.text_max_len), np.int64)
        ids[: nq // 2, :3] = rng.integers(3, 40, size=(nq // 2, 3))
        data.query_text_ids, data.query_text_mask = ids, (ids > 0).astype(np.int64)
    if cfg.experimental.distill_bm25 > 0:
        bm25 = pytest.importorskip("upper_fast_train.lexical_teacher")
        words = [f"w{i}" for i in range(30)]
        corpus = [" ".join(rng.choice(words, 4)) for _ in range(N_PRODUCTS)]
        queries = [" ".join(rng.choice(words, 2)) for _ in range(nq)]
        data.bm25_products, data.bm25_queries = bm25.bm25_matrices(corpus, queries)
        data.bm25_top = bm25.bm25_top_rows(data.bm25_products, data.bm25_queries, cfg.experimental.distill_bm25_negatives)
    if cfg.objective.personal_contrast > 0:  # a few queries, each engaged by several users in a batch
        data.queries.event_query = data.queries.event_query % 6
        data.personal_groups = np.random.default_rng(7).integers(0, 40, len(data)).astype(np.int64)
    return data, products


def _run(name: str) -> dict[str, object]:
    cfg = tiny_config(**SCENARIOS[name])
    data, products = _world(name, cfg)
    torch.manual_seed(cfg.loop.seed)
    model = build_model(cfg, 0, tiny_vocab(), tiny_encoder(cfg))
    metrics = train_model(model, data, products, cfg)
    steps = [{k: v for k, v in h.items() if not k.endswith("_s")} for h in metrics["loss_history"][:STEPS_RECORDED]]
    weights = {k: [float(v.double().sum()), float(v.double().abs().sum())] for k, v in model.state_dict().items()}
    return {"steps": steps, "weights": weights, "n_steps": metrics["steps"]}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_training_matches_the_recorded_terms_and_weights(name):
    got = _run(name)
    if os.environ.get("UPPER_FAST_RECORD"):
        recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        recorded[name] = got
        RECORD.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    want = json.loads(RECORD.read_text())[name]
    assert got["n_steps"] == want["n_steps"]
    for step_got, step_want in zip(got["steps"], want["steps"], strict=True):
        assert sorted(step_got) == sorted(step_want), (step_got, step_want)
        for key, value in step_want.items():
            assert step_got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), (name, step_want["step"], key)
    assert sorted(got["weights"]) == sorted(want["weights"])
    for key, (total, size) in want["weights"].items():
        assert got["weights"][key][0] == pytest.approx(total, rel=1e-6, abs=1e-6), (name, key)
        assert got["weights"][key][1] == pytest.approx(size, rel=1e-6, abs=1e-6), (name, key)
