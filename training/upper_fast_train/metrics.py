"""Retrieval metrics as pure numpy functions of retrieved ids (tested against independent oracles).

Conventions: `retrieved` is (m, K) int64 catalog rows, best first, -1 = padding (fewer than K hits);
relevant / judged rows are catalog rows >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["exact_topk", "kendall_tau_b", "ndcg_at_k", "recall_at_k"]


def _check_retrieved(retrieved: np.ndarray, m: int) -> None:
    if not isinstance(retrieved, np.ndarray) or retrieved.dtype != np.int64 or retrieved.ndim != 2:
        raise TypeError("retrieved must be a 2-D int64 numpy array (m, K) of catalog rows")
    if retrieved.shape[0] != m:
        raise ValueError(f"retrieved has {retrieved.shape[0]} rows but {m} requests were given")


def recall_at_k(retrieved: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int]) -> np.ndarray:
    """Per-request recall: |relevant ∩ top-k| / |relevant| (relevant rows deduplicated).

    retrieved: (m, K) int64; relevant: m arrays of int64 rows; ks: each <= K.
    Returns (m, len(ks)) float64, NaN for requests with no relevant row (callers skip them).
    """
    _check_retrieved(retrieved, len(relevant))
    if any(k < 1 or k > retrieved.shape[1] for k in ks):
        raise ValueError(f"every k must be in [1, {retrieved.shape[1]}] (the number of retrieved columns)")
    out = np.full((len(relevant), len(ks)), np.nan)
    for i, rel in enumerate(relevant):
        rel = np.unique(np.asarray(rel, dtype=np.int64))
        if rel.size == 0:
            continue
        # Position of each hit in the ranking; a row appears at most once in a top-k list.
        hit_pos = np.nonzero(np.isin(retrieved[i], rel))[0]
        for j, k in enumerate(ks):
            out[i, j] = np.count_nonzero(hit_pos < k) / rel.size
    return out


def ndcg_at_k(
    retrieved: np.ndarray, judged_rows: Sequence[np.ndarray], judged_gains: Sequence[np.ndarray], k: int
) -> np.ndarray:
    """Per-query nDCG@k with gain g at rank r (0-based) discounted by 1 / log2(r + 2).

    judged_rows[i] / judged_gains[i]: the judged rows of query i and their gains (unjudged rows gain 0).
    The ideal DCG sorts all judged gains of the query. Returns (m,) float64; 0 where no gain > 0.
    """
    _check_retrieved(retrieved, len(judged_rows))
    if len(judged_rows) != len(judged_gains):
        raise ValueError("judged_rows and judged_gains must have one entry per query")
    if k < 1 or k > retrieved.shape[1]:
        raise ValueError(f"k must be in [1, {retrieved.shape[1]}]")
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    out = np.zeros(len(judged_rows))
    for i, (rows, gains) in enumerate(zip(judged_rows, judged_gains)):
        gains = np.asarray(gains, dtype=np.float64)
        ideal = np.sort(gains)[::-1][:k]
        idcg = float((ideal * discount[: ideal.size]).sum())
        if idcg <= 0:
            continue
        gain_of = dict(zip(np.asarray(rows).tolist(), gains.tolist()))
        top = [gain_of.get(r, 0.0) for r in retrieved[i, :k].tolist()]
        out[i] = float((np.asarray(top) * discount[: len(top)]).sum()) / idcg
    return out


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors over the same items (ties handled as tau-b).

    x, y: (n,) numeric. Returns a float in [-1, 1]; NaN when n < 2 or either vector is constant.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    n = x.size
    if n < 2:
        return float("nan")
    iu = np.triu_indices(n, k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    n0 = dx.size
    untied_x = n0 - np.count_nonzero(dx == 0)
    untied_y = n0 - np.count_nonzero(dy == 0)
    if untied_x == 0 or untied_y == 0:
        return float("nan")
    return float((dx * dy).sum() / np.sqrt(float(untied_x) * float(untied_y)))


def exact_topk(queries: np.ndarray, products: np.ndarray, k: int, batch_size: int = 1024) -> np.ndarray:
    """Exact top-k catalog rows by inner product, using the core's `upper_fast.topk_inner_product`.

    queries (m, D) float32, products (n, D) float32, both C-contiguous. Returns (m, k) int64 rows,
    best first, -1 where the catalog has fewer than k products.
    """
    from upper_fast import topk_inner_product

    for name, arr in (("queries", queries), ("products", products)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
            raise TypeError(f"{name} must be a 2-D float32 numpy array")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous: call np.ascontiguousarray")
    if queries.shape[1] != products.shape[1]:
        raise ValueError(f"queries have dim {queries.shape[1]} but products have dim {products.shape[1]}")
    out = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for start in range(0, queries.shape[0], batch_size):
        chunk = np.ascontiguousarray(queries[start : start + batch_size])
        top = topk_inner_product(chunk, products, k)
        out[start : start + chunk.shape[0]] = top.ids
    return out
