"""The training loop: seeded batches, one composed objective per step (objective.py), the optimizer
and its schedule, checkpoints and resume, torchrun data parallelism; `train` runs preparation then
the loop into a run directory.

Run directory layout: docs/design.md "Training run directory".
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upper_fast_train.checkpoint import load_checkpoint, save_checkpoint, save_model
from upper_fast_train.config import TrainConfig
from upper_fast_train.distributed import Dist, init_distributed, resolve_device, seed_all
from upper_fast_train.encode import encode_product_rows, frozen_encode_dtype, pool_token_rows, pooled_text_vectors
from upper_fast_train.features import ProductTable, TrainingSet
from upper_fast_train.negatives import DynamicPool, negative_weights
from upper_fast_train.objective import Objective, build_objective
from upper_fast_train.optim import SplitOptimizer, build_optimizer, group_lr, lr_factor
from upper_fast_train.prepare import (build_model, build_teacher, check_trainable, distill_token_rows, prepare_run_dir,
                                      teacher_vectors, training_arrays, write_run_config)
from upper_fast_train.step import gather_step, lexical_columns, negative_groups, score_step
from upper_fast_train.towers import UpperModel, text_encoder_from_dir

# The loop's own names first; the rest were defined here before the package split them into modules
# and are still imported from here (run.py, tests).
__all__ = ["train", "train_model", "step_loss", "build_model", "build_optimizer", "distill_token_rows", "encode_product_rows",
           "group_lr", "lexical_columns", "lr_factor", "negative_groups", "pool_token_rows", "pooled_text_vectors",
           "resolve_device", "save_model", "SplitOptimizer"]

_PHASES = ("data", "mining", "forward", "backward", "optimizer")


def step_loss(
    model: torch.nn.Module,
    data: TrainingSet,
    products: ProductTable,
    idx: np.ndarray,
    step: int,
    schedule: dict[str, float],
    pool: DynamicPool | None,
    objective: Objective,
    config: TrainConfig,
    device: torch.device,
    timing: dict[str, float],
) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch `idx`: gather the columns the objective's active terms need (mining from `pool`),
    one forward, and the objective's total and per-term values. `schedule`: the negative weights."""
    if config.experimental.history_item_vectors == "product" and (
            products.history_vectors is None or step % config.experimental.history_vector_refresh == 0):
        t0 = time.perf_counter()
        core = model.module if hasattr(model, "module") else model
        products.history_vectors = encode_product_rows(core, products, np.arange(len(products)), device)
        timing["data"] += time.perf_counter() - t0
    sources = objective.sources(schedule)
    mine = _Miner(model, pool, products, step, config, device) if pool is not None and "dynamic" in sources else None
    teacher_rows = None
    if "lexical" in sources:
        distill = next(w.term for w in objective.terms if w.term.source == "lexical")
        teacher_rows = distill.teacher.has.cpu().numpy()  # type: ignore[attr-defined]
    columns = gather_step(data, products, idx, step, config, device, timing, uniform="uniform" in sources,
                          group_sets=objective.needs_group_sets(schedule), shown="shown" in sources, mine=mine,
                          teacher_rows=teacher_rows)
    if mine is not None and mine.query_vectors is not None:
        columns.query_vectors = mine.query_vectors
        timing["mining"] -= mine.forward_s  # the step's own query forward, done early
        timing["forward"] += mine.forward_s
    t0 = time.perf_counter()
    loss, parts = objective(score_step(model, columns, products), schedule)
    timing["forward"] += time.perf_counter() - t0
    return loss, parts


class _Miner:
    """The step's dynamic-negative miner: refresh the pool when due, then each row's hardest pool
    products for its current query vector, never one of its group positives.

    The query vectors are the step's own query forward, with grad, kept in `query_vectors` for the
    loss (`StepColumns.query_vectors`), when that forward is the same computation as a no-grad one:
    no active dropout in the query tower and no DDP wrapper (whose forward must see both towers).
    Otherwise they come from a separate no-grad forward and `query_vectors` stays None."""

    def __init__(self, model: torch.nn.Module, pool: DynamicPool, products: ProductTable, step: int, config: TrainConfig,
                 device: torch.device) -> None:
        self.model, self.pool, self.products, self.step, self.config, self.device = model, pool, products, step, config, device
        self.query_vectors: torch.Tensor | None = None  # (B, D) with grad, when reused
        self.forward_s = 0.0  # seconds of the reused forward

    def __call__(self, query_inputs: dict[str, torch.Tensor], excluded_sets: np.ndarray | None) -> np.ndarray:
        core = self.model.module if hasattr(self.model, "module") else self.model
        if self.pool.due(self.step):
            self.pool.refresh(self.step, lambda rows: encode_product_rows(core, self.products, rows, self.device))
        if core is self.model and torch.is_grad_enabled() and _without_dropout(core.query_tower):
            t0 = time.perf_counter()
            self.query_vectors = core.query_tower(**query_inputs)  # (B, D)
            self.forward_s = time.perf_counter() - t0
            q_now = self.query_vectors.detach()
        else:
            with torch.no_grad():
                q_now = core.query_tower(**query_inputs)  # (B, D)
        q_np = np.ascontiguousarray(q_now.float().cpu().numpy())
        return self.pool.mine(q_np, excluded_sets, self.config.negatives.dynamic_negatives)  # (B, K)


def _without_dropout(module: torch.nn.Module) -> bool:
    """True when no dropout of `module` (nn.Dropout or attention dropout) has p > 0, so its training
    forward draws nothing at random and a second forward would compute the same vectors."""
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            return False
        if isinstance(m, torch.nn.MultiheadAttention) and m.dropout > 0:
            return False
    return True


def _step_loss(
    model: torch.nn.Module, data: TrainingSet, products: ProductTable, idx: np.ndarray, step: int, weights: dict[str, float],
    pool: DynamicPool | None, config: TrainConfig, device: torch.device, timing: dict[str, float],
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`step_loss` with the objective built from `config` (and the teacher's vectors, when given)."""
    objective = build_objective(config, build_teacher(teacher, data, config) if teacher is not None else None)
    return step_loss(model, data, products, idx, step, weights, pool, objective, config, device, timing)


def _epoch_order(n: int, epoch: int, seed: int, d: Dist) -> np.ndarray:
    """This rank's example order for an epoch: one seeded permutation, padded to a multiple of the
    world size and split round-robin (DistributedSampler's scheme)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if d.world > 1:
        pad = (-n) % d.world
        order = np.concatenate([order, order[:pad]])[d.rank :: d.world]
    return order


def train_model(
    model: UpperModel,
    data: TrainingSet,
    products: ProductTable,
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Train `model` in place on prepared arrays. Returns metrics (steps, examples/s, step-time
    breakdown in seconds, mean loss per epoch). Works alone or under torchrun (DDP).

    objective: the loss terms and their weights; default `build_objective(config, teacher)`, the
    teacher built here when `config.objective.distill_weight` > 0."""
    from tqdm.auto import tqdm

    device = resolve_device(config.loop.device)
    d = init_distributed(device)
    seed_all(config.loop.seed)
    model.to(device)
    t_encode = time.perf_counter()
    if config.text.freeze_text_encoder:
        model.product_tower.text_encoder.requires_grad_(False)
        if products.text_pooled is None:
            products.text_pooled = pooled_text_vectors(
                model, products, device, config.text.text_cache_dir, progress=config.loop.progress,
                dtype=frozen_encode_dtype(config.text.frozen_encode_dtype, device))
    if config.model.term_idf_scale:  # before any checkpoint load (which restores the same values)
        model.terms.set_idf(products.product_terms)
    text_encode_s = time.perf_counter() - t_encode
    teacher = None
    t_teacher = time.perf_counter()
    if objective is None and config.objective.distill_weight > 0:
        teacher = build_teacher(teacher_vectors(model, data, products, config, device), data, config)
    teacher_s = time.perf_counter() - t_teacher
    objective = objective if objective is not None else build_objective(config, teacher)
    net: torch.nn.Module = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = build_optimizer(model, config)
    steps_per_epoch = max(1, math.ceil(math.ceil(len(data) / d.world) / config.loop.batch_size))
    total = steps_per_epoch * config.loop.epochs
    total_run = min(total, config.loop.max_steps) if config.loop.max_steps else total
    step = 0
    pool = DynamicPool(len(products), config, seed=config.loop.seed) if config.negatives.dynamic_negatives > 0 else None
    if resume and checkpoint_dir is not None and (checkpoint_dir / "state.json").exists():
        step = load_checkpoint(checkpoint_dir, model, optimizer, pool, device)
    timing = dict.fromkeys(_PHASES, 0.0)
    history: list[dict[str, float]] = []
    examples = 0
    start = time.perf_counter()
    bar = tqdm(total=total_run, initial=step, desc="training", disable=not (config.loop.progress and d.main), dynamic_ncols=True)
    model.train()
    while step < total_run:
        epoch, offset = divmod(step, steps_per_epoch)
        order = _epoch_order(len(data), epoch, config.loop.seed, d)
        idx = order[offset * config.loop.batch_size : (offset + 1) * config.loop.batch_size]
        if len(idx) == 0:
            step += 1
            continue
        weights = negative_weights(step, total, config)
        for group in optimizer.param_groups:
            group["lr"] = group_lr(group, step, total, config)
        before = dict(timing)
        loss, parts = step_loss(net, data, products, idx, step, weights, pool, objective, config, device, timing)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        optimizer.step()
        t2 = time.perf_counter()
        timing["backward"] += t1 - t0
        timing["optimizer"] += t2 - t1
        step += 1
        examples += len(idx) * d.world
        phases = {f"{k}_s": timing[k] - before[k] for k in _PHASES}
        history.append({"step": step, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"], **parts,
                        **{f"w_{k}": v for k, v in weights.items()}, **phases})
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", ex_s=f"{examples / max(elapsed, 1e-9):.0f}")
        if checkpoint_dir is not None and d.main and (
            (config.loop.checkpoint_every and step % config.loop.checkpoint_every == 0) or step % steps_per_epoch == 0 or step == total_run
        ):
            save_checkpoint(checkpoint_dir, model, optimizer, pool, step, config)
    bar.close()
    elapsed = time.perf_counter() - start
    epoch_loss = [
        float(np.mean([h["loss"] for h in history if (h["step"] - 1) // steps_per_epoch == e]))
        for e in sorted({(h["step"] - 1) // steps_per_epoch for h in history})
    ]
    return {
        "steps": step,
        "steps_this_run": len(history),
        "total_steps": total,
        "examples_this_run": examples,
        "seconds": elapsed,
        "text_encode_s": text_encode_s,  # the frozen encoder's pooled product texts (before the loop)
        "teacher_s": teacher_s,  # the distillation teacher's query vectors (before the loop)
        # the dtype those frozen passes ran in (TextConfig.frozen_encode_dtype resolved on this device)
        "frozen_encode_dtype": str(frozen_encode_dtype(config.text.frozen_encode_dtype, device)).removeprefix("torch."),
        "examples_per_s": examples / elapsed if elapsed > 0 else 0.0,
        "step_time_s": {k: v / max(1, len(history)) for k, v in timing.items()},
        "world_size": d.world,
        "device": str(device),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "epoch_loss": epoch_loss,
        "loss_history": history[:: max(1, len(history) // 200)],
    }


def train(
    dataset: Any, run_dir: str | Path, config: TrainConfig | None = None, resume: bool = False, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """Train UPPER on `dataset` (an `upper_fast.data.Dataset` with meta["train_end"]) into `run_dir`.

    Prepares (on rank 0 under torchrun; the others load the results): the subword tokenizer, frozen
    graph embeddings, doc2query pre-training of the text encoder; then trains and writes the run
    directory (docs/design.md). resume=True continues from run_dir/checkpoint. data_dir, when given,
    is recorded as config.json["data_dir"] (so `upper-fast eval RUN` finds the data). Returns the metrics.
    """
    config = config or TrainConfig()
    if "train_end" not in dataset.meta:
        raise ValueError('dataset.meta has no "train_end": the training window is timestamp < train_end')
    check_trainable(dataset, config)  # before anything is written
    t_start = time.perf_counter()
    run = Path(run_dir)
    if config.text.freeze_text_encoder and config.text.text_cache_dir is None:
        # The pooled product texts are the costliest part of a run with a pretrained encoder: keep
        # them with the run, so evaluation and export read them instead of encoding again.
        config = config.replace(text_cache_dir=str(run.resolve() / "text_cache"))
    device = resolve_device(config.loop.device)
    d = init_distributed(device)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint"
    seed_all(config.loop.seed)
    prep: dict[str, Any] = {}
    if d.main:
        prep = prepare_run_dir(dataset, run, config, resume)
    d.barrier()

    arrays = training_arrays(dataset, run, config, progress=config.loop.progress and d.main)
    data, products = arrays.data, arrays.products
    if config.experimental.history_item_vectors == "interactions":
        from upper_fast_train.item_interactions import view_vectors

        products.history_vectors = view_vectors(config.experimental.history_interactions_run,
                                                [str(p) for p in dataset.catalog.column("product_id").to_pylist()])
        config = config.replace(history_vector_dim=int(products.history_vectors.shape[1]))

    encoder = text_encoder_from_dir(run / "text_encoder")
    model = build_model(config, arrays.tokenizer.get_vocab_size(), arrays.vocab, encoder)
    if (ckpt / "encoder_init.safetensors").exists():
        from safetensors.torch import load_file

        model.product_tower.text_encoder.load_state_dict(load_file(str(ckpt / "encoder_init.safetensors")))
    metrics = train_model(model, data, products, config, checkpoint_dir=ckpt, resume=resume)
    if d.main:
        save_model(model, run / "model.safetensors")
        metrics.update(prep)
        metrics.update(
            total_s=time.perf_counter() - t_start,  # preparation, featurizing, encoding and the loop
            featurize_s=arrays.featurize_s,
            n_examples=len(data),
            n_positive=int((data.labels > 0).sum()),
            n_products=len(products),
            simulated=bool(dataset.meta.get("simulated", False)),
            parameters=model.size_report(),
        )
        (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
        write_run_config(run, config, arrays.tokenizer.get_vocab_size(), arrays.vocab, arrays.graph, len(products), data_dir,
                         getattr(dataset, "windows", None))
        # Catalog row order of graph.npz, so a run can encode any later catalog by product id.
        (run / "product_ids.json").write_text(json.dumps([str(p) for p in dataset.catalog.column("product_id").to_pylist()]))
    d.barrier()
    return metrics
