"""Negatives from three sources and the schedule that weights them.

- hard in-batch: the other rows' products, the hardest few by current score;
- uniform: random catalog products shared by the whole batch;
- dynamic hard: a large pool of products encoded (no grad) with the current product tower every few
  steps; per batch the core's `topk_inner_product` mines each row's top-k, which are re-encoded with grad.

No source ever gives a row one of its own positives: the row's product, or any product its group
engaged with in the batch. The group is the query (`TrainConfig.negatives.exclude_query_positives`, the
default) or the query-user.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from upper_fast_train.config import TrainConfig

__all__ = [
    "negative_weights",
    "own_positive_mask",
    "excluded_products",
    "hardest",
    "sample_uniform",
    "DynamicPool",
]


def negative_weights(step: int, total_steps: int, config: TrainConfig) -> dict[str, float]:
    """Weights of the three negative losses at `step` (0-based) of `total_steps`.

    Warm-up (the first `warmup_fraction` of the steps): uniform only, at `uniform_weight_start`.
    Then, linearly to the last step: uniform decays to `uniform_weight_end` while in-batch and dynamic
    rise from 0 to `inbatch_weight_end` and `dynamic_weight_end`.
    """
    if total_steps < 1:
        raise ValueError("total_steps must be >= 1")
    warm = config.negatives.warmup_fraction * total_steps
    if step < warm or total_steps - warm <= 1:
        ramp = 0.0 if step < warm else 1.0
    else:
        ramp = min(1.0, (step - warm) / (total_steps - 1 - warm))
    return {
        "uniform": config.negatives.uniform_weight_start + ramp * (config.negatives.uniform_weight_end - config.negatives.uniform_weight_start),
        "inbatch": ramp * config.negatives.inbatch_weight_end,
        "dynamic": ramp * config.negatives.dynamic_weight_end,
    }


def own_positive_mask(product_rows: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: True where column j's product is a positive of row i.

    product_rows (B,) int64 catalog rows; groups (B,) int64 group keys (the query, or the query-user);
    labels (B,) int64 (0 = negative). Column j is row i's positive when it is the same product, or a
    product that row i's group engaged with anywhere in the batch.
    """
    same_product = product_rows[:, None] == product_rows[None, :]  # (B, B)
    engaged_by_group = (groups[:, None] == groups[None, :]) & (labels > 0)[None, :]  # [i, r]
    reach = engaged_by_group.float() @ same_product.float()  # [i, j] > 0: r engaged j's product
    return same_product | (reach > 0)


def excluded_products(product_rows: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per row, the catalog rows no negative may be: (B, E) int64, -1 padded (E >= 1)."""
    mask = own_positive_mask(product_rows, groups, labels)
    rows = product_rows.cpu().numpy()
    sets = [np.unique(rows[m]) for m in mask.cpu().numpy()]
    width = max(len(s) for s in sets)
    out = np.full((len(sets), width), -1, dtype=np.int64)
    for i, s in enumerate(sets):
        out[i, : len(s)] = s
    return out


def hardest(scores: torch.Tensor, excluded: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest scores per row outside `excluded`.

    scores (B, C) float; excluded (B, C) bool. Returns (scores (B, k'), valid (B, k')) with
    k' = min(k, C); `valid` is False where a row had fewer than k' candidates.
    """
    k = min(k, scores.shape[1])
    masked = scores.masked_fill(excluded, float("-inf"))
    top, idx = masked.topk(k, dim=1)
    valid = torch.isfinite(top)
    return torch.where(valid, top, torch.zeros_like(top)), valid


def sample_uniform(n_products: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` catalog rows drawn uniformly with replacement: (count,) int64."""
    return torch.randint(0, n_products, (count,), generator=generator)


def membership(candidates: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """(B, C) bool: candidates[i, c] (or candidates[c] when 1-D) is in row i's excluded set."""
    cand = np.broadcast_to(candidates, (excluded.shape[0],) + candidates.shape[-1:])
    return (cand[:, :, None] == excluded[:, None, :]).any(-1) & (cand >= 0)


class DynamicPool:
    """A pool of catalog products with vectors from the current product tower, refreshed every
    `config.negatives.dynamic_refresh` steps, mined per batch with `upper_fast.topk_inner_product`."""

    def __init__(self, n_products: int, config: TrainConfig, seed: int) -> None:
        self.n_products = n_products
        self.size = min(config.negatives.dynamic_pool, n_products)
        self.refresh_every = max(1, config.negatives.dynamic_refresh)
        self.seed = seed
        self.rows = np.zeros(0, dtype=np.int64)
        self.vectors = np.zeros((0, config.model.dim), dtype=np.float32)
        self.position = np.full(n_products, -1, dtype=np.int64)
        self.last_refresh = -1

    def due(self, step: int) -> bool:
        return self.last_refresh < 0 or step - self.last_refresh >= self.refresh_every

    def refresh(self, step: int, encode: Callable[[np.ndarray], np.ndarray]) -> None:
        """Draw a new pool and encode it: `encode(rows (P,) int64) -> (P, D) float32`."""
        self.position[self.rows] = -1
        # Seeded by the step, so a resumed run draws the same pools as an uninterrupted one.
        rng = np.random.default_rng([self.seed, step])
        self.rows = np.sort(rng.choice(self.n_products, size=self.size, replace=False)).astype(np.int64)
        self.position[self.rows] = np.arange(self.size)
        self.vectors = np.ascontiguousarray(encode(self.rows), dtype=np.float32)
        self.last_refresh = step

    def mine(self, queries: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
        """Top-k pool products per query, never an excluded one.

        queries (B, D) float32 C-contiguous; excluded (B, E) int64 catalog rows, -1 padded.
        Returns (B, k) int64 catalog rows, -1 where the pool had fewer than k admissible products.
        """
        from upper_fast import topk_inner_product

        pos = np.where(excluded >= 0, self.position[np.maximum(excluded, 0)], -1)
        top = topk_inner_product(queries, self.vectors, k, exclude=[row[row >= 0] for row in pos])
        return np.where(top.ids >= 0, self.rows[np.maximum(top.ids, 0)], -1)
