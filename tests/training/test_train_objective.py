"""The objective as composed loss terms: which terms a config builds, how they are weighed and
skipped, the columns each reads, and a hand-composed objective in the loop."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _train_synthetic import N_PRODUCTS, single_thread, tiny_config, tiny_encoder, tiny_vocab, tiny_world  # noqa: E402,F401

from upper_fast_train.config import TrainConfig  # noqa: E402
from upper_fast_train.losses import hinge_loss, negative_hinge  # noqa: E402
from upper_fast_train.objective import (DistillTeacher, MultiPartHinge, Objective, SampledNegatives, Weighted,  # noqa: E402
                                        build_objective)
from upper_fast_train.prepare import build_model  # noqa: E402
from upper_fast_train.step import gather_step, score_step  # noqa: E402
from upper_fast_train.loop import train_model  # noqa: E402

SCHEDULE = {"uniform": 1.0, "inbatch": 0.5, "dynamic": 0.5}


def _fresh(cfg):
    torch.manual_seed(cfg.loop.seed)
    return build_model(cfg, 0, tiny_vocab(), tiny_encoder(cfg))


def _teacher(nq: int) -> DistillTeacher:
    return DistillTeacher(torch.ones(nq, 4), torch.ones(nq, dtype=torch.bool), torch.ones(N_PRODUCTS, 4))


def _names(objective: Objective) -> list[str]:
    return [w.term.name for w in objective.terms]


@pytest.mark.parametrize("preset,names", [
    ("logs", ["hinge", "contrast", "distill", "inbatch", "uniform", "dynamic", "shown"]),
    ("relevance", ["hinge", "contrast", "distill", "inbatch", "uniform", "dynamic"]),
    ("paper", ["hinge", "inbatch", "uniform", "dynamic"]),
    ("tiny", ["hinge", "inbatch", "uniform", "dynamic", "shown"]),
])
def test_build_objective_composes_the_terms_each_preset_turns_on(preset, names):
    config = TrainConfig.preset(preset)
    assert _names(build_objective(config, _teacher(3))) == names
    # without a teacher there is no distillation term (train_model builds one when distill_weight > 0)
    assert _names(build_objective(config)) == [n for n in names if n != "distill"]


def test_build_objective_weights_come_from_the_config_or_the_schedule():
    cfg = tiny_config(personal_contrast=0.3, contrast_weight=0.7, shown_negatives=2, shown_weight=0.4)
    weights = {w.term.name: w.weight for w in build_objective(cfg).terms}
    assert weights == {"hinge": 1.0, "personal": 0.3, "contrast": 0.7, "inbatch": "inbatch", "uniform": "uniform",
                       "shown": 0.4}
    assert _names(build_objective(tiny_config(inbatch_negatives=0, uniform_negatives=0, shown_negatives=0))) == ["hinge"]


def _step(cfg, schedule=SCHEDULE, objective=None, data_products=None, idx=np.arange(16)):
    data, products = data_products if data_products is not None else tiny_world(cfg)
    objective = objective or build_objective(cfg)
    timing = dict.fromkeys(("data", "mining", "forward"), 0.0)
    sources = objective.sources(schedule)
    cols = gather_step(data, products, idx, 0, cfg, torch.device("cpu"), timing, uniform="uniform" in sources,
                       group_sets=objective.needs_group_sets(schedule), shown="shown" in sources)
    return score_step(_fresh(cfg), cols, products), objective


def test_objective_sums_weighted_terms_and_reports_each_unweighted():
    cfg = tiny_config(contrast_weight=0.7)
    step, objective = _step(cfg)
    total, parts = objective(step, SCHEDULE)
    assert set(parts) == {"hinge", "contrast", "inbatch", "uniform"}
    weights = {"hinge": 1.0, "contrast": 0.7, "inbatch": 0.5, "uniform": 1.0}
    assert float(total.detach()) == pytest.approx(sum(weights[k] * v for k, v in parts.items()), rel=1e-6)
    # the hinge term is the pure function of the step's positive scores
    assert parts["hinge"] == pytest.approx(float(hinge_loss(step.positive_scores, step.labels, cfg.objective.thresholds)))


def test_a_term_whose_scheduled_weight_is_zero_is_not_computed():
    calls = []

    class Spy:
        name, source, needs_group_sets = "spy", None, False

        def __call__(self, step):
            calls.append(1)
            return step.positive_scores.sum()

    cfg = tiny_config()
    objective = Objective([Weighted(MultiPartHinge(cfg.objective.thresholds), 1.0), Weighted(Spy(), "inbatch")])
    step, _ = _step(cfg, objective=objective)
    _, parts = objective(step, {"uniform": 1.0, "inbatch": 0.0, "dynamic": 0.0})
    assert parts.keys() == {"hinge"} and not calls
    _, parts = objective(step, SCHEDULE)
    assert parts.keys() == {"hinge", "spy"} and calls == [1]
    with pytest.raises(ValueError, match="unique"):
        Objective([Weighted(MultiPartHinge(cfg.objective.thresholds), 1.0)] * 2)


def test_uniform_term_scores_the_drawn_products_and_masks_group_positives():
    cfg = tiny_config()
    step, _ = _step(cfg)
    cols = step.columns
    q = step.model.query_tower(**cols.query_inputs)
    from upper_fast_train.encode import to_device

    p = step.model.product_tower(**to_device(step.products.take(cols.uniform_rows), step.device))
    scores = q @ p.T  # (B, U): the oracle, encoded apart from the step
    valid = torch.from_numpy(np.array([[r not in set(row[row >= 0]) for r in cols.uniform_rows] for row in cols.excluded_sets]))
    want = negative_hinge(scores, valid, cfg.objective.thresholds[0])
    assert float(SampledNegatives("uniform", cfg.objective.thresholds[0])(step)) == pytest.approx(float(want), rel=1e-5, abs=1e-7)


def test_per_row_sources_read_their_own_columns_when_shown_and_teacher_columns_meet():
    """Shown products and teacher-mined BM25 products in one step: each source's scores are its own
    products' (this combination used to read the teacher's columns as shown ones and fail)."""
    cfg = tiny_config(shown_negatives=2, distill_weight=1.0, distill_bm25_negatives=3)
    data, products = tiny_world(cfg)
    rng = np.random.default_rng(3)
    data.shown_rows = rng.integers(-1, N_PRODUCTS, (len(data), 2))
    nq = len(data.queries.query_terms)
    data.bm25_top = rng.integers(-1, N_PRODUCTS, (nq, 3))
    teacher = _teacher(nq)
    objective = build_objective(cfg, teacher)
    timing = dict.fromkeys(("data", "mining", "forward"), 0.0)
    cols = gather_step(data, products, np.arange(16), 0, cfg, torch.device("cpu"), timing, uniform=True, group_sets=True,
                       shown=True, teacher_rows=teacher.has.numpy())
    assert (cols.per_row["shown"] >= 0).any() and (cols.per_row["lexical"] >= 0).any()
    step = score_step(_fresh(cfg), cols, products)
    s, ok = step.source_scores("shown")
    rows = cols.per_row["shown"]
    want = step.scores[torch.arange(16)[:, None], torch.from_numpy(np.searchsorted(cols.unique, np.maximum(rows, 0)))]
    torch.testing.assert_close(s[ok], want[torch.from_numpy(rows >= 0)])
    _, parts = objective(step, SCHEDULE)
    assert {"shown", "distill", "uniform"} <= parts.keys() and all(np.isfinite(v) for v in parts.values())
    assert bool(step.own_lexical.any())


def test_train_model_takes_a_hand_composed_objective():
    class MeanScore:
        """A made-up term: the mean positive score, pushed down."""

        name, source, needs_group_sets = "mean_score", None, False

        def __call__(self, step):
            return step.positive_scores.mean()

    cfg = tiny_config(max_steps=3)
    data, products = tiny_world(cfg)
    objective = Objective([Weighted(MultiPartHinge(cfg.objective.thresholds), 1.0), Weighted(MeanScore(), 0.1),
                           Weighted(SampledNegatives("uniform", cfg.objective.thresholds[0]), "uniform")])
    metrics = train_model(_fresh(cfg), data, products, cfg, objective=objective)
    history = metrics["loss_history"]
    assert all({"hinge", "mean_score", "uniform"} == {k for k in h if k in {"hinge", "mean_score", "uniform", "inbatch"}}
               for h in history)
    for h in history:
        assert h["loss"] == pytest.approx(h["hinge"] + 0.1 * h["mean_score"] + h["w_uniform"] * h["uniform"], rel=1e-5)


def test_distillation_rows_without_history_skip_rows_the_user_history_reaches():
    import torch

    from upper_fast_train.objective import without_history

    items = torch.tensor([[0, 0, 0], [2, 0, 0], [0, 0, 0], [0, 0, 0]])  # (B, N) types, 0 = padding
    queries = torch.zeros(4, 2, 3, dtype=torch.int64)  # (B, M, Lq)
    queries[2, 1, 0] = 7  # row 2: a history query, no history item
    assert without_history({"hist_item_type": items, "hist_query_terms": queries}).tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="distill_rows"):
        TrainConfig.preset("logs", **{"objective.distill_rows": "signed_in"})
    config = TrainConfig.preset("logs", **{"objective.distill_rows": "without_history"})
    assert config.objective.distill_rows == "without_history"


def test_distillation_of_the_blanked_query_vector_scores_the_user_free_twin():
    """distill_rows="blanked": the teacher is matched by the query vector the same weights give with the
    user inputs blanked (the non-personalised ablation's blanking), not by the personalised vector."""
    from upper_fast_train.losses import softmax_distill
    from upper_fast_train.objective import SoftmaxDistillation

    cfg = tiny_config(distill_weight=1.0, distill_rows="blanked")
    data, products = tiny_world(cfg)
    nq = len(data.queries.query_terms)
    teacher = DistillTeacher(torch.randn(nq, 4, generator=torch.Generator().manual_seed(1)),
                             torch.ones(nq, dtype=torch.bool), torch.randn(N_PRODUCTS, 4, generator=torch.Generator().manual_seed(2)))
    every = data.queries.take(np.arange(len(data)), products.product_graph)
    idx = np.flatnonzero((every["hist_item_type"] > 0).any(1) & (data.labels > 0))[:12]
    idx = np.concatenate([idx, np.flatnonzero((every["hist_item_type"] == 0).all(1))[:4]])
    step, _ = _step(cfg, data_products=(data, products), objective=build_objective(cfg, teacher), idx=idx)
    assert bool((step.columns.query_inputs["hist_item_type"] > 0).any())  # some rows have a history to blank
    core = step.model
    core.query_tower.personalized = False  # the twin: the same weights, user inputs blanked inside the tower
    q_blank = core.query_tower(**step.columns.query_inputs)
    core.query_tower.personalized = True
    p = core.product_tower(**step.columns.product_inputs)
    t_logits, rows = teacher.logits(step.columns.query_rows, step.columns.unique, cfg.objective.distill_temperature)
    rows = rows & (step.labels > 0)
    args = (t_logits, step.positive_columns, step.forbidden, cfg.objective.contrast_temperature, 1.0, rows)
    want = softmax_distill(q_blank @ p.T, *args)
    term = SoftmaxDistillation(teacher, cfg.objective.contrast_temperature, cfg.objective.distill_temperature, rows="blanked")
    got = term(step)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    personalised = SoftmaxDistillation(teacher, cfg.objective.contrast_temperature, cfg.objective.distill_temperature)(step)
    assert abs(float(personalised) - float(got)) > 1e-6  # the user inputs change the personalised vector
    got.backward()  # the gradient reaches the shared towers through the blanked forward
    assert core.terms.embedding.weight.grad is not None


def test_user_fusion_off_keeps_the_users_fusion_columns_at_zero_through_training():
    """experimental.user_fusion false: the user reaches the query vector through the additive skip only;
    the fusion MLP's user columns start at zero and stay there under AdamW with weight decay."""
    cfg = tiny_config(user_fusion=False, weight_decay=0.1, max_steps=4)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    tower = model.query_tower
    first = tower.fuse[0]
    assert bool((first.weight[:, tower.query_width:] == 0).all()) and bool((first.weight[:, :tower.query_width] != 0).any())
    before = first.weight[:, :tower.query_width].detach().clone()
    train_model(model, data, products, cfg)
    assert bool((first.weight[:, tower.query_width:] == 0).all())
    assert not torch.equal(before, first.weight[:, :tower.query_width].detach())  # the query columns did train
    q_in = {k: torch.from_numpy(v) for k, v in data.queries.take(np.arange(len(data)), products.product_graph).items()}
    with torch.no_grad():
        pers = tower(**q_in)
        tower.personalized = False
        blank = tower(**q_in)
    assert float((pers - blank).abs().max()) > 1e-4  # the skip still carries the user
    with pytest.raises(ValueError, match="user_skip"):
        tiny_config(user_fusion=False, user_skip=False)


def test_user_after_norm_adds_the_user_skip_to_the_unit_query_vector():
    """experimental.user_after_norm: q = normalize(normalize(fusion + lexical skip) + user skip); the
    export refuses such a model (the lean serving tower normalises once)."""
    import torch.nn.functional as F

    cfg = tiny_config(user_fusion=False, user_after_norm=True)
    data, products = tiny_world(cfg)
    tower = _fresh(cfg).query_tower
    seen = {}
    tower.fuse.register_forward_hook(lambda m, i, o: seen.__setitem__("fuse", o))
    tower.lexical.register_forward_hook(lambda m, i, o: seen.__setitem__("lexical", o))
    tower.user_skip.register_forward_hook(lambda m, i, o: seen.__setitem__("user", o))
    q_in = {k: torch.from_numpy(v) for k, v in data.queries.take(np.arange(24), products.product_graph).items()}
    with torch.no_grad():
        got = tower(**q_in)
    want = F.normalize(F.normalize(seen["fuse"] + seen["lexical"], dim=-1) + seen["user"], dim=-1)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="user_fusion"):
        tiny_config(user_after_norm=True)
