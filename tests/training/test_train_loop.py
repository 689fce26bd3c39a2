"""The training loop on a tiny synthetic world: learning, checkpoint/resume, determinism, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _train_synthetic import single_thread, tiny_config, tiny_encoder, tiny_vocab, tiny_world  # noqa: E402,F401

from upper_fast_train.losses import hinge_loss  # noqa: E402
from upper_fast_train.prepare import build_model  # noqa: E402
from upper_fast_train.loop import train_model  # noqa: E402
from _paths import child_env  # noqa: E402


def _fresh(cfg):
    torch.manual_seed(cfg.loop.seed)
    return build_model(cfg, 0, tiny_vocab(), tiny_encoder(cfg))


@torch.no_grad()
def _eval_loss(model, data, products, cfg) -> float:
    """Hinge on every example plus the mean hinge of all non-positive catalog products (fixed measure)."""
    model.eval()
    idx = np.arange(len(data))
    q = model.query_tower(**{k: torch.from_numpy(v) for k, v in data.queries.take(idx, products.product_graph).items()})
    p = model.product_tower(**{k: torch.from_numpy(v) for k, v in products.take(np.arange(len(products))).items()})
    scores = q @ p.T
    pos = scores[torch.from_numpy(idx), torch.from_numpy(data.product_rows)]
    neg = torch.relu(scores - cfg.objective.thresholds[0]).mean()
    model.train()
    return float(hinge_loss(pos, torch.from_numpy(data.labels), cfg.objective.thresholds) + neg)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_decreases_the_loss():
    cfg = tiny_config(epochs=6)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    before = _eval_loss(model, data, products, cfg)
    metrics = train_model(model, data, products, cfg)
    after = _eval_loss(model, data, products, cfg)
    assert metrics["steps"] == 6 * int(np.ceil(len(data) / cfg.loop.batch_size))
    assert after < 0.8 * before, (before, after)
    assert set(metrics["step_time_s"]) == {"data", "mining", "forward", "backward", "optimizer"}
    assert metrics["examples_per_s"] > 0


@pytest.mark.parametrize("skip_only", [False, True])
def test_training_with_the_personal_contrast_runs_and_reports_it(skip_only):
    cfg = tiny_config(max_steps=3, personal_contrast=1.0, personal_contrast_skip_only=skip_only)
    data, products = tiny_world(cfg)
    metrics = train_model(_fresh(cfg), data, products, cfg)
    assert metrics["steps"] == 3 and np.isfinite(metrics["last_loss"])
    assert all("personal" in h for h in metrics["loss_history"])


def test_lr_schedules():
    from upper_fast_train.config import TrainConfig
    from upper_fast_train.optim import lr_factor

    assert [lr_factor(s, 4, "constant") for s in range(4)] == [1.0] * 4
    assert [lr_factor(s, 4, "linear") for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = [lr_factor(s, 4, "cosine") for s in range(5)]
    assert cos[0] == 1.0 and abs(cos[2] - 0.5) < 1e-12 and abs(cos[4]) < 1e-12 and cos == sorted(cos, reverse=True)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        TrainConfig.from_flat(lr_schedule="step")


def test_seeded_training_is_deterministic():
    cfg = tiny_config(max_steps=4)
    data, products = tiny_world(cfg)
    a, b = _fresh(cfg), _fresh(cfg)
    train_model(a, data, products, cfg)
    train_model(b, data, products, cfg)
    for k, v in _weights(a).items():
        torch.testing.assert_close(v, _weights(b)[k], rtol=0, atol=0)


def test_sparse_term_grads_learn_and_touch_only_the_used_rows():
    from upper_fast_train.optim import SplitOptimizer, build_optimizer

    cfg = tiny_config(epochs=6, sparse_term_grads=True)
    assert isinstance(build_optimizer(_fresh(cfg), cfg), SplitOptimizer)
    assert not isinstance(build_optimizer(_fresh(tiny_config()), tiny_config()), SplitOptimizer)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    start = model.terms.embedding.weight.detach().clone()
    before = _eval_loss(model, data, products, cfg)
    metrics = train_model(model, data, products, cfg)
    assert _eval_loss(model, data, products, cfg) < 0.8 * before
    assert np.isfinite(metrics["last_loss"])
    used = np.unique(np.concatenate([data.queries.query_terms.ravel(), products.product_terms.ravel()]))
    unused = np.setdiff1d(np.arange(cfg.term_vocab_size), used)
    assert len(unused) > 0 and len(used) > 1
    weight = model.terms.embedding.weight.detach()
    # SparseAdam is lazy and has no weight decay: rows no batch used are bit-identical, used rows moved.
    torch.testing.assert_close(weight[unused], start[unused], rtol=0, atol=0)
    assert (weight[used[used > 0]] - start[used[used > 0]]).abs().amax(dim=1).min() > 0
    # Dense AdamW (the default) decays every row, used or not.
    dense = _fresh(tiny_config(epochs=1))
    d0 = dense.terms.embedding.weight.detach().clone()
    train_model(dense, data, products, tiny_config(epochs=1))
    assert (dense.terms.embedding.weight.detach()[unused] != d0[unused]).any()


def test_training_sets_the_idf_row_scales_and_checkpoints_keep_them(tmp_path):
    from safetensors.torch import load_model

    cfg = tiny_config(max_steps=3, term_idf_scale=True)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    assert model.terms.row_scale.eq(1.0).all()
    metrics = train_model(model, data, products, cfg, checkpoint_dir=tmp_path)
    assert np.isfinite(metrics["last_loss"])
    scale = model.terms.row_scale.clone()
    used = np.unique(products.product_terms)
    assert scale[used[used > 0]].lt(1.0).any() and scale.max() == 1.0
    again = _fresh(cfg)
    load_model(again, str(tmp_path / "model.safetensors"))
    torch.testing.assert_close(again.terms.row_scale, scale, rtol=0, atol=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_training_learns_term_weights_and_checkpoints_keep_them(tmp_path, sparse):
    from safetensors.torch import load_model

    from upper_fast_train.optim import SplitOptimizer, build_optimizer

    cfg = tiny_config(max_steps=3, term_weights=True, sparse_term_grads=sparse)
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    assert model.terms.weight_logit.weight.eq(0).all()
    optimizer = build_optimizer(model, cfg)
    if sparse:  # the weight logits are stepped with the table, by SparseAdam
        assert isinstance(optimizer, SplitOptimizer)
        assert any(p is model.terms.weight_logit.weight for g in optimizer.sparse.param_groups for p in g["params"])
    metrics = train_model(model, data, products, cfg, checkpoint_dir=tmp_path)
    assert np.isfinite(metrics["last_loss"])
    logits = model.terms.weight_logit.weight.detach().clone()
    used = np.unique(products.product_terms)
    assert logits[used[used > 0]].abs().max() > 0 and logits[0].eq(0).all()
    again = _fresh(cfg)
    load_model(again, str(tmp_path / "model.safetensors"))
    torch.testing.assert_close(again.terms.weight_logit.weight, logits, rtol=0, atol=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_term_lr_scale_gives_the_term_table_its_own_lr(tmp_path, sparse):
    from upper_fast_train.config import TrainConfig
    from upper_fast_train.optim import group_lr

    cfg = tiny_config(max_steps=4, term_weights=True, sparse_term_grads=sparse, term_lr_scale=5.0, lr=1e-3,
                      lr_schedule="cosine")
    data, products = tiny_world(cfg)
    model = _fresh(cfg)
    metrics = train_model(model, data, products, cfg, checkpoint_dir=tmp_path)
    assert np.isfinite(metrics["last_loss"])
    from upper_fast_train.optim import build_optimizer

    optimizer = build_optimizer(model, cfg)
    table = {id(model.terms.embedding.weight), id(model.terms.weight_logit.weight)}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert group["term_table"] == bool(ids & table) and (not group["term_table"] or ids == table)
        assert group["lr"] == pytest.approx(5e-3 if group["term_table"] else 1e-3)
        assert group_lr(group, 2, 4, cfg) == pytest.approx((5e-3 if group["term_table"] else 1e-3) * 0.5)
    assert sum(g["term_table"] for g in optimizer.param_groups) == 1
    # scale 1: one dense group as before (checkpoints written before the field keep loading)
    plain = build_optimizer(model, tiny_config(sparse_term_grads=sparse))
    assert [g["term_table"] for g in plain.param_groups] == ([False, True] if sparse else [False])
    with pytest.raises(ValueError, match="term_lr_scale"):
        TrainConfig.from_flat(term_lr_scale=0.0)


def test_resume_refuses_a_changed_sparse_term_grads(tmp_path):
    cfg = tiny_config(max_steps=2, sparse_term_grads=True)
    data, products = tiny_world(cfg)
    train_model(_fresh(cfg), data, products, cfg, checkpoint_dir=tmp_path / "s")
    dense = tiny_config(max_steps=4)
    with pytest.raises(ValueError, match="sparse_term_grads true"):
        train_model(_fresh(dense), data, products, dense, checkpoint_dir=tmp_path / "s", resume=True)
    train_model(_fresh(dense), data, products, tiny_config(max_steps=2), checkpoint_dir=tmp_path / "d")
    with pytest.raises(ValueError, match="sparse_term_grads false"):
        train_model(_fresh(cfg), data, products, tiny_config(max_steps=4, sparse_term_grads=True), checkpoint_dir=tmp_path / "d", resume=True)


@pytest.mark.parametrize("schedule,sparse", [("constant", False), ("cosine", False), ("cosine", True)])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, schedule, sparse):
    pytest.importorskip("upper_fast").__dict__.get("topk_inner_product") or pytest.skip("needs topk_inner_product")
    cfg = tiny_config(epochs=2, warmup_fraction=0.0, dynamic_negatives=2, dynamic_refresh=3, lr_schedule=schedule, sparse_term_grads=sparse)
    data, products = tiny_world(cfg)
    straight = _fresh(cfg)
    m0 = train_model(straight, data, products, cfg, checkpoint_dir=tmp_path / "a")
    lrs = [h["lr"] for h in m0["loss_history"]]
    assert lrs[0] == cfg.loop.lr and (lrs[-1] == cfg.loop.lr if schedule == "constant" else lrs[-1] < 0.05 * cfg.loop.lr)
    resumed = _fresh(cfg)
    half = tiny_config(epochs=2, warmup_fraction=0.0, dynamic_negatives=2, dynamic_refresh=3, max_steps=7, lr_schedule=schedule,
                       sparse_term_grads=sparse)
    m1 = train_model(resumed, data, products, half, checkpoint_dir=tmp_path / "b")
    assert m1["steps"] == 7
    again = _fresh(cfg)  # a new process would start from fresh weights and load the checkpoint
    m2 = train_model(again, data, products, cfg, checkpoint_dir=tmp_path / "b", resume=True)
    assert m2["steps_this_run"] == m2["total_steps"] - 7
    for k, v in _weights(straight).items():
        torch.testing.assert_close(v, _weights(again)[k], rtol=1e-5, atol=1e-6)


_DDP_SCRIPT = """
import json, sys, torch
from _train_synthetic import tiny_config, tiny_encoder, tiny_vocab, tiny_world
from upper_fast_train.loop import build_model, train_model
import torch.distributed as dist
cfg = tiny_config(max_steps=3, device="cpu", sparse_term_grads=sys.argv[2] == "sparse")
data, products = tiny_world(cfg)
torch.manual_seed(0)
model = build_model(cfg, 0, tiny_vocab(), tiny_encoder(cfg))
m = train_model(model, data, products, cfg)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
out = [None, None] if dist.get_rank() == 0 else None
dist.gather_object(flat.sum().item(), out, dst=0)
if dist.get_rank() == 0:
    json.dump({"sums": out, "world": m["world_size"], "examples": m["examples_this_run"]}, open(sys.argv[1], "w"))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("grads", ["dense", "sparse"])
def test_ddp_two_gloo_processes_keep_replicas_identical(tmp_path, grads):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "out.json"
    tests = Path(__file__).resolve().parents[1]
    env = child_env(OMP_NUM_THREADS="1")
    env["PYTHONPATH"] += os.pathsep + str(tests)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out), grads]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["examples"] == 2 * 3 * tiny_config().loop.batch_size
    a, b = result["sums"]
    assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_training_with_shown_negatives_learns_the_searchers_choice():
    # Each engagement row has one shown-but-passed-over product; with the pairwise term on (a margin
    # it never fully meets), the engaged product's lead over it grows well beyond what the other
    # losses give (same seed, same steps).
    def mean_gap(shown_weight: float) -> float:
        cfg = tiny_config(epochs=8, shown_negatives=1, shown_weight=shown_weight, shown_margin=2.0)
        data, products = tiny_world(cfg)
        rng = np.random.default_rng(5)
        data.shown_rows = ((data.product_rows + rng.integers(1, len(products), len(data))) % len(products))[:, None]
        data.shown_rows[data.labels == 0] = -1
        model = _fresh(cfg)
        metrics = train_model(model, data, products, cfg)
        if shown_weight > 0:
            assert all("shown" in h for h in metrics["loss_history"]) and np.isfinite(metrics["last_loss"])
        else:
            assert not any("shown" in h for h in metrics["loss_history"])
        model.eval()
        with torch.no_grad():
            idx = np.flatnonzero(data.labels > 0)
            q = model.query_tower(**{k: torch.from_numpy(v) for k, v in data.queries.take(idx, products.product_graph).items()})
            p = model.product_tower(**{k: torch.from_numpy(v) for k, v in products.take(np.arange(len(products))).items()})
            s = q @ p.T
            ar = torch.arange(len(idx))
            gap = s[ar, torch.from_numpy(data.product_rows[idx])] - s[ar, torch.from_numpy(data.shown_rows[idx, 0])]
        return float(gap.mean())

    without, with_term = mean_gap(0.0), mean_gap(1.0)
    assert with_term > without + 0.1, (without, with_term)


def test_training_with_the_softmax_contrast_reports_it_and_lowers_it():
    cfg = tiny_config(epochs=4, contrast_weight=1.0)
    data, products = tiny_world(cfg)
    metrics = train_model(_fresh(cfg), data, products, cfg)
    hist = metrics["loss_history"]
    assert all("contrast" in h and np.isfinite(h["contrast"]) for h in hist)
    assert np.mean([h["contrast"] for h in hist[-3:]]) < np.mean([h["contrast"] for h in hist[:3]])
    off = train_model(_fresh(tiny_config(max_steps=2)), data, products, tiny_config(max_steps=2))
    assert not any("contrast" in h for h in off["loss_history"])


def test_contrast_config_is_validated():
    from upper_fast_train.config import TrainConfig

    with pytest.raises(ValueError, match="contrast_weight"):
        TrainConfig.from_flat(contrast_weight=-1.0)
    with pytest.raises(ValueError, match="contrast_temperature"):
        TrainConfig.from_flat(contrast_temperature=0.0)
    for bad in ([1.0, 2.0], [1.0, -1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="contrast_type_weights"):
            TrainConfig.from_flat(contrast_type_weights=bad)


def test_contrast_type_weights_weigh_the_contrast_by_engagement_type():
    """Weights [1, 1, 1, 1] are the plain contrast; zero weight on every type but purchase leaves only
    the purchase rows in it, so the step's contrast changes (the tiny world has several types)."""
    from upper_fast_train.objective import build_objective
    from upper_fast_train.loop import step_loss

    base = tiny_config(contrast_weight=1.0, max_steps=1)
    data, products = tiny_world(base)
    assert len(set(data.labels[data.labels > 0].tolist())) > 1
    idx = np.arange(min(len(data.labels), base.loop.batch_size))
    weights = {"uniform": 1.0, "inbatch": 0.0, "dynamic": 0.0}

    def contrast(**kw):
        cfg = tiny_config(contrast_weight=1.0, max_steps=1, **kw)
        model = _fresh(cfg)
        _, parts = step_loss(model, data, products, idx, 0, weights, None, build_objective(cfg), cfg, torch.device("cpu"),
                             {"data": 0.0, "mining": 0.0, "forward": 0.0})
        return parts["contrast"]

    plain = contrast()
    assert contrast(contrast_type_weights=[1.0, 1.0, 1.0, 1.0]) == pytest.approx(plain, rel=1e-5)
    assert contrast(contrast_type_weights=[0.0, 0.0, 0.0, 1.0]) != pytest.approx(plain, rel=1e-3)


def test_training_with_the_distillation_pulls_scores_toward_the_teacher():
    """The teacher is the tiny product text encoder on query token rows; only rows with tokens take part."""
    from upper_fast_train.prepare import teacher_vectors

    cfg = tiny_config(epochs=4, distill_weight=1.0, distill_temperature=0.1)
    data, products = tiny_world(cfg)
    nq = len(data.queries.query_terms)
    rng = np.random.default_rng(5)
    ids = np.zeros((nq, cfg.text.text_max_len), np.int64)
    ids[: nq // 2, :3] = rng.integers(3, 40, size=(nq // 2, 3))  # the second half has no teacher
    data.query_text_ids, data.query_text_mask = ids, (ids > 0).astype(np.int64)
    model = _fresh(cfg)
    _, has, _ = teacher_vectors(model, data, products, cfg, torch.device("cpu"))
    assert int(has.sum()) == nq // 2
    metrics = train_model(model, data, products, cfg)
    hist = metrics["loss_history"]
    assert all("distill" in h and np.isfinite(h["distill"]) for h in hist)
    assert np.mean([h["distill"] for h in hist[-3:]]) < np.mean([h["distill"] for h in hist[:3]])
    data.query_text_ids = None
    with pytest.raises(ValueError, match="query_text_ids"):
        train_model(_fresh(cfg), data, products, cfg)


def test_distill_token_rows_samples_query_strings():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from upper_fast_train.prepare import distill_token_rows

    tok = Tokenizer(models.WordLevel({"[UNK]": 1, "a": 2, "b": 3, "c": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ids, mask = distill_token_rows(["a b", "c", "b c a", "a"], tok, tiny_config(distill_weight=1.0, distill_queries=2))
    assert ids.shape == (4, 8) and int((mask.sum(1) > 0).sum()) == 2
    ids, mask = distill_token_rows(["a b", "c"], tok, tiny_config(distill_weight=1.0))
    assert mask.sum(1).tolist() == [2, 1] and ids[0, :2].tolist() == [2, 3]
    with pytest.raises(ValueError, match="distill_weight"):
        tiny_config(distill_weight=-1.0)


def test_distill_token_rows_prefers_frequent_queries():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from upper_fast_train.prepare import distill_token_rows

    tok = Tokenizer(models.WordLevel({"[UNK]": 1, "a": 2, "b": 3, "c": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    _, mask = distill_token_rows(["a", "b", "c", "a b"], tok, tiny_config(distill_weight=1.0, distill_queries=2), np.array([1, 5, 1, 3]))
    assert (mask.sum(1) > 0).tolist() == [False, True, False, True]
