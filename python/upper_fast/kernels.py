"""Batched native kernels: hydration, exact top-k by inner product, hinge thresholds.

All work runs in the C++ core (``upper_fast._core``) with the GIL released. Inputs are checked,
never silently copied or cast: a wrong dtype raises TypeError, a wrong shape, a non-contiguous
array or a NaN where it matters raises ValueError, each naming the fix.

bf16 arrays are passed as ``np.uint16`` holding the upper 16 bits of the float32 value
(``(x.view(np.uint32) >> 16).astype(np.uint16)`` truncates; the core rounds to nearest even when
it converts itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

from upper_fast import _core
from upper_fast.types import TopK

__all__ = [
    "INTERACTION_TYPES",
    "HingeThresholds",
    "hydrate_products",
    "hydrate_queries",
    "rerank_exact",
    "simd_dot",
    "topk_inner_product",
]

# Resolve the kernel table now, so a bad UPPER_FAST_SIMD (unknown level, or one this CPU lacks)
# fails `import upper_fast` with a ValueError rather than the first call that scores something.
_core.simd_level()

#: Interaction type names by code (code 0 is a negative / no engagement).
INTERACTION_TYPES: tuple[str, ...] = ("negative", "click", "favorite", "add_to_cart", "purchase")

Exclude = Union[tuple[np.ndarray, np.ndarray], Sequence[Union[np.ndarray, Sequence[int]]], None]


def simd_dot(a: np.ndarray, b: np.ndarray, level: str | None = None) -> float | int:
    """Inner product of two 1-D arrays with the SIMD kernel for their dtypes.

    Pairs: (float32, float32), (float32, uint16 bf16), (uint16 bf16, uint16 bf16) -> float;
    (int8, int8) -> int (exact below 2**17 elements). ``level`` ('avx512', 'avx2', 'scalar')
    picks a kernel table (ValueError if this CPU lacks it); None uses the active one
    (``upper_fast.simd_level()``).
    """
    return _core.simd_dot(a, b, level)


def hydrate_products(
    emb: np.ndarray,
    features: np.ndarray,
    scale: float = 1.0,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Hydrated product vectors ``[emb ; scale * features]``.

    emb: (n, d) float32, features: (n, f) float32, both C-contiguous.
    out: optional preallocated (n, d + f) float32 C-contiguous array (not overlapping the inputs),
    filled and returned. num_threads: 0 = all cores (small inputs stay on one thread).
    Returns (n, d + f) float32.
    """
    return _core.hydrate_products(emb, features, float(scale), out, _threads(num_threads))


def hydrate_queries(
    q: np.ndarray,
    weights: np.ndarray,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Hydrated query vectors ``[q ; weights]`` (the same finite weights on every row).

    q: (m, d) float32, weights: (f,) float32. With :func:`hydrate_products`,
    ``<[q ; w], [e ; s * x]> = <q, e> + s * <w, x>``.
    out: optional preallocated (m, d + f) float32 C-contiguous array. Returns (m, d + f) float32.
    """
    return _core.hydrate_queries(q, weights, out, _threads(num_threads))


def rerank_exact(
    queries: np.ndarray,
    vectors: np.ndarray,
    bias: np.ndarray,
    candidates: np.ndarray,
    k: int,
) -> TopK:
    """Re-score ANN candidates exactly and keep the best k per query.

    queries (m, d) float32; vectors (n, d) float32 (full precision); bias (n,) float32 added to each
    score (e.g. the hydration boost); candidates (m, c) int64 rows into `vectors`, negative entries are
    padding (what Index.search returns). Score = <q_i, vectors[row]> + bias[row]; ties rank the lower
    row first. The serving path for bf16/i8 indexes: walk the compact graph, then rank the walk's
    candidates on the float32 vectors (the Retriever's `rerank`). GIL released; rows are prefetched.

    Returns TopK with ids (m, k') int64 (-1 padding), scores (m, k') float32 (-inf padding), counts
    (m,), k' = min(k, c). A NaN score (NaN in vectors or bias) ranks as -inf. Raises ValueError naming
    the first candidate row >= n or for non-finite queries, TypeError/ValueError for bad arrays.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    ids, scores, counts = _core.rerank_exact(queries, vectors, bias, candidates, int(k))
    return TopK(ids, scores, counts)


def topk_inner_product(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    exclude: Exclude = None,
    num_threads: int = 0,
) -> TopK:
    """Exact top-k candidates per query by inner product (batched hard-negative mining).

    queries: (m, d), candidates: (n, d); each float32 or uint16 (bf16), any mix, C-contiguous.
    bf16 values are widened exactly to float32 and accumulated in float32 (so bf16 inputs halve the
    memory and bandwidth but score as their float32 values). The (m, n) score matrix is never
    materialised: candidates are scored in L2-sized blocks by a register-blocked micro-kernel and
    each query keeps a k-heap behind a threshold check.

    k: > 0; when fewer than k candidates remain the rows are padded with id -1 / score -inf and
    ``counts`` says how many are real. Ties rank the lower candidate row first.
    exclude: candidate rows that must not be returned, per query, either
      - a tuple ``(indptr, indices)`` (CSR, int64; query i excludes
        ``indices[indptr[i]:indptr[i+1]]``, indptr has m + 1 entries starting at 0), or
      - a list of m integer arrays / sequences (one per query).
    Indices must lie in [0, n). num_threads: 0 = all cores; candidate ranges are split across
    threads and merged, so results do not depend on it.
    Raises ValueError when a score is NaN/inf (non-finite inputs or float32 overflow).
    Returns TopK(ids (m, k) int64, scores (m, k) float32, counts (m,) int64).
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int (got {type(k).__name__})")
    if isinstance(queries, np.ndarray) and isinstance(candidates, np.ndarray) and queries.ndim == candidates.ndim == 2:
        m, n = queries.shape[0], candidates.shape[0]
        # k beyond the candidate count only adds padding; refuse sizes whose (m, k) outputs could
        # not be meant (and would end in MemoryError) with an error that says what to do.
        if k > max(n, 1) * 1024 or m * k > 2**31:
            raise ValueError(
                f"k = {k} is too large for {m} queries x {n} candidates (outputs of {m} x {k}): "
                f"use k <= {n} (the number of candidates); rows past it would only be padding"
            )
    indptr, indices = _exclude_csr(exclude, queries)
    ids, scores, counts = _core.topk_inner_product(
        queries, candidates, int(k), indptr, indices, _threads(num_threads)
    )
    return TopK(ids, scores, counts)


def _threads(num_threads: int) -> int:
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be an int (got {type(num_threads).__name__})")
    if num_threads < 0:
        raise ValueError("num_threads must be >= 0 (0 = all cores)")
    return int(num_threads)


def _exclude_csr(exclude: Exclude, queries: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    if exclude is None:
        return None, None
    if isinstance(exclude, tuple):
        if len(exclude) != 2:
            raise ValueError("exclude as a tuple must be (indptr, indices); pass per-query arrays as a list")
        return exclude[0], exclude[1]
    if isinstance(exclude, np.ndarray) or not isinstance(exclude, Sequence):
        raise TypeError("exclude must be a tuple (indptr, indices) or a list of per-query integer arrays")
    m = queries.shape[0] if isinstance(queries, np.ndarray) and queries.ndim == 2 else None
    if m is not None and len(exclude) != m:
        raise ValueError(f"exclude has {len(exclude)} entries but there are {m} queries (one list per query)")
    parts = []
    for i, row in enumerate(exclude):
        arr = np.asarray(row)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(f"exclude[{i}] must be a 1-D integer array (got dtype {arr.dtype}, {arr.ndim}-D)")
        parts.append(arr.astype(np.int64, copy=False))
    indptr = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=indptr[1:])
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return indptr, np.ascontiguousarray(indices, dtype=np.int64)


class HingeThresholds:
    """Score thresholds of UPPER's multi-part hinge loss: one per interaction type + negatives.

    Valid when all are finite and ``negative < click <= favorite <= add_to_cart <= purchase``
    (ValueError otherwise). Values are stored as float32. Scores are similarities (higher is
    better); a score "clears" a threshold when ``score >= threshold``.
    """

    def __init__(self, *, click: float, favorite: float, add_to_cart: float, purchase: float, negative: float) -> None:
        values = {"click": click, "favorite": favorite, "add_to_cart": add_to_cart, "purchase": purchase,
                  "negative": negative}
        for name, v in values.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"threshold {name!r} must be a number (got {type(v).__name__})")
        self._core = _core.HingeThresholds(float(click), float(favorite), float(add_to_cart), float(purchase),
                                           float(negative))

    @property
    def thresholds(self) -> dict[str, float]:
        """``{"negative": .., "click": .., "favorite": .., "add_to_cart": .., "purchase": ..}``."""
        return {name: float(self._core.threshold(code)) for code, name in enumerate(INTERACTION_TYPES)}

    def as_dict(self) -> dict[str, float]:
        """JSON-ready dict; :meth:`from_dict` restores it."""
        return self.thresholds

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> HingeThresholds:
        """Inverse of :meth:`as_dict`; ValueError on missing or unknown keys."""
        keys = set(d)
        if keys != set(INTERACTION_TYPES):
            raise ValueError(
                f"thresholds dict needs exactly the keys {sorted(INTERACTION_TYPES)} "
                f"(missing {sorted(set(INTERACTION_TYPES) - keys)}, unknown {sorted(keys - set(INTERACTION_TYPES))})"
            )
        return cls(**{name: d[name] for name in INTERACTION_TYPES})

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v!r}" for n, v in self.thresholds.items() if n != "negative")
        return f"HingeThresholds({args}, negative={self.thresholds['negative']!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HingeThresholds) and self.thresholds == other.thresholds

    def prune(self, scores: np.ndarray, min_tier: int | str = 0) -> np.ndarray:
        """Boolean mask, same shape as ``scores`` (float32, C-contiguous, any shape), of the scores
        that clear the cut ``threshold(min_tier)``: by default the negative threshold; ``min_tier``
        1..4 (or 'click' .. 'purchase') keeps only candidates predicted at least that engaged.
        -inf (top-k padding) is never kept; NaN raises ValueError.
        """
        return self._core.prune(scores, _tier_code(min_tier))

    @property
    def native(self) -> _core.HingeThresholds:
        """The core's thresholds object, for the native calls that take one (`_core.fuse_hybrid`)."""
        return self._core

    def finish_hits(self, ids: np.ndarray, scores: np.ndarray, boost: np.ndarray, k: int, min_tier: int | str = 0,
                    prune: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One ANN result row -> the hits a search returns, in one native pass: skip the -1 padding,
        cosine = score - boost[id], with prune drop hits whose cosine misses ``threshold(min_tier)``,
        keep the first k, and give each kept hit its tier.

        ids int64 (m,) and scores float32 (m,) in rank order (ids index into boost); boost float32
        (n,). Returns (ids int64, scores float32, cosines float32, tiers int8), each of the kept
        length. An id outside 0..n-1 raises IndexError; wrong dtypes or shapes raise ValueError.
        """
        return self._core.finish_hits(ids, scores, boost, k, _tier_code(min_tier), prune)  # type: ignore[no-any-return]

    def tier(self, scores: np.ndarray) -> np.ndarray:
        """int8 codes, same shape as ``scores``: the highest t in 1 (click) .. 4 (purchase) with
        ``score >= threshold(t)``, 0 when below the click threshold."""
        return self._core.tier(scores)

    def hinge_loss(
        self, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """Multi-part hinge loss and its gradient with respect to ``scores``.

        scores: (n,) float32 finite; labels: (n,) int64 codes (0 negative, 1 click .. 4 purchase);
        weights: optional (n,) float32. Row i costs ``l_i = max(0, theta[label_i] - s_i)`` for a
        positive and ``max(0, s_i - theta_negative)`` for a negative, and
        ``loss = sum_i w_i * l_i / n`` (a plain mean when weights is None; 0 for n = 0). The gradient is
        ``w_i / n * (-1 | +1 | 0)``, 0 exactly at the kink (as ``torch.relu``), so it equals
        ``(w * torch.relu(margin)).mean()`` differentiated by autograd.
        Returns (loss float, grad (n,) float32).
        """
        loss, grad = self._core.hinge_loss(scores, labels, weights)
        return float(loss), grad

    def calibrate(self, scores: np.ndarray, labels: np.ndarray) -> dict:
        """What each threshold would keep on held-out (scores, labels).

        scores: (n,) float32 (no NaN), labels: (n,) int64 codes 0..4. Returns
        ``{"n": n, "count": {type: rows}, "cuts": {cut: {"threshold": t, "kept_fraction": f,
        "recall": {type: r}}}}`` where cut and type run over 'negative', 'click', 'favorite',
        'add_to_cart', 'purchase'; recall of a type is the fraction of its rows with
        ``score >= t`` (NaN when the type has no rows; for 'negative' it is the fraction of negatives
        kept) and kept_fraction is over all rows (NaN when n = 0).
        """
        kept, hits, count = self._core.calibrate(scores, labels)
        n = int(sum(count))
        cuts = {}
        for c, cut in enumerate(INTERACTION_TYPES):
            cuts[cut] = {
                "threshold": float(self._core.threshold(c)),
                "kept_fraction": kept[c] / n if n else math.nan,
                "recall": {t: (hits[c][j] / count[j] if count[j] else math.nan) for j, t in enumerate(INTERACTION_TYPES)},
            }
        return {"n": n, "count": dict(zip(INTERACTION_TYPES, map(int, count))), "cuts": cuts}


def _tier_code(min_tier: int | str) -> int:
    if isinstance(min_tier, str):
        if min_tier not in INTERACTION_TYPES:
            raise ValueError(f"min_tier must be one of {INTERACTION_TYPES} or 0..4 (got {min_tier!r})")
        return INTERACTION_TYPES.index(min_tier)
    if isinstance(min_tier, (bool, np.bool_)) or not isinstance(min_tier, (int, np.integer)):
        raise TypeError(f"min_tier must be an int 0..4 or a type name (got {type(min_tier).__name__})")
    if not 0 <= min_tier <= 4:
        raise ValueError(f"min_tier must be 0 (negative cut) .. 4 (purchase) (got {min_tier})")
    return int(min_tier)
