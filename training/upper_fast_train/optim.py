"""The optimizer and its learning-rate schedule: AdamW (plus SparseAdam for sparse term tables),
param groups tagged for the term table's own lr scale."""

from __future__ import annotations

import math
from typing import Any

import torch

from upper_fast_train.config import TrainConfig

__all__ = ["SplitOptimizer", "build_optimizer", "group_lr", "lr_factor"]


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Multiplier of `TrainConfig.loop.lr` at optimizer step `step` (0-based) of `total` (`lr_schedule`)."""
    if schedule == "constant":
        return 1.0
    progress = min(1.0, step / max(1, total))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


class SplitOptimizer:
    """AdamW for the dense parameters plus SparseAdam for the sparse-gradient embedding tables
    (`TrainConfig.loop.sparse_term_grads`), stepped together. `param_groups` lists both optimizers' groups
    (the trainer sets every group's lr); the state dict holds both under "dense" / "sparse"."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer) -> None:
        self.dense = dense
        self.sparse = sparse

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.dense.param_groups + self.sparse.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dense.load_state_dict(state_dict["dense"])
        self.sparse.load_state_dict(state_dict["sparse"])


def _term_table_ids(model: torch.nn.Module) -> set[int]:
    """ids of the shared term table's per-row parameters (the embedding rows and, with term_weights,
    the pooling-weight logits): the parameters `TrainConfig.loop.term_lr_scale` applies to."""
    core = model.module if hasattr(model, "module") else model
    terms = getattr(core, "terms", None)
    if terms is None:
        return set()
    rows = [terms.embedding] + ([terms.weight_logit] if terms.weight_logit is not None else [])
    return {id(m.weight) for m in rows if m.weight.requires_grad}


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer | SplitOptimizer:
    """AdamW over the trainable parameters; with `sparse_term_grads`, the sparse embedding tables
    go to a SparseAdam instead (same lr and betas, no weight decay) inside a `SplitOptimizer`.

    Every param group carries "term_table" (True for the group of the term table's rows): the
    trainer sets its lr to lr x schedule x `term_lr_scale`, the others' to lr x schedule. The table
    gets a group of its own only when its scale is not 1 (so older checkpoints keep resuming)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    sparse_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse and m.weight.requires_grad
    }
    table_ids = _term_table_ids(model)
    dense = [p for p in trainable if id(p) not in sparse_ids]
    table_lr = config.loop.lr * config.loop.term_lr_scale
    if config.loop.term_lr_scale != 1.0 and any(id(p) in table_ids for p in dense):
        groups = [{"params": [p for p in dense if id(p) not in table_ids], "term_table": False},
                  {"params": [p for p in dense if id(p) in table_ids], "term_table": True, "lr": table_lr}]
    else:
        groups = [{"params": dense, "term_table": False}]
    adamw = torch.optim.AdamW(groups, lr=config.loop.lr, weight_decay=config.loop.weight_decay, foreach=True)
    if not sparse_ids:
        return adamw
    sparse = [p for p in trainable if id(p) in sparse_ids]
    tagged = [{"params": sparse, "term_table": all(id(p) in table_ids for p in sparse), "lr": table_lr}]
    return SplitOptimizer(adamw, torch.optim.SparseAdam(tagged, lr=config.loop.lr))


def group_lr(group: dict[str, Any], step: int, total: int, config: TrainConfig) -> float:
    """The learning rate of one param group at `step`: lr x the schedule's factor, x term_lr_scale for
    the term table's group."""
    scale = config.loop.term_lr_scale if group.get("term_table", False) else 1.0
    return config.loop.lr * scale * lr_factor(step, total, config.loop.lr_schedule)
