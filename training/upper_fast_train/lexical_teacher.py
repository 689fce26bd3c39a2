"""A BM25 teacher for the distillation (TrainConfig.experimental.distill_bm25): sparse BM25 weights of the catalog
and term counts of the training queries, so a step scores its (query, product) pairs exactly as
BM25 over titles does (bm25s' "lucene" variant, k1 1.5, b 0.75, English stopwords), for a few
hundred thousand pairs in milliseconds. Training only: nothing here is part of a served model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["bm25_idf", "bm25_matrices", "bm25_scores", "bm25_top_rows"]


def bm25_idf(df: np.ndarray, n: int) -> np.ndarray:
    """BM25 ("lucene") idf ln(1 + (n - df + 0.5) / (df + 0.5)) of document frequencies `df` over `n` documents."""
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n - df + 0.5) / (df + 0.5))


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize([t or "" for t in texts], stopwords="en", return_ids=False, show_progress=False)


def bm25_matrices(corpus: Sequence[str], queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> tuple[Any, Any]:
    """(P, Q): P (len(corpus), V) float32 CSR of BM25 term weights idf(t) * tf / (tf + k1 (1 - b + b
    dl / avgdl)) with idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)); Q (len(queries), V) float32 CSR
    of query term counts over the corpus vocabulary (terms not in the corpus dropped). Q @ P.T is
    the BM25 score of every pair."""
    from scipy import sparse

    docs = _tokens(corpus)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, words in enumerate(docs):
        for w in words:
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    n, v = len(docs), max(1, len(vocab))
    tf = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, v))
    tf.sum_duplicates()
    dl = np.asarray(tf.sum(1)).ravel()
    avgdl = max(float(dl.mean()) if n else 1.0, 1e-9)
    df = np.bincount(tf.indices, minlength=v).astype(np.float64)
    idf = bm25_idf(df, n)
    coo = tf.tocoo()
    t = coo.data.astype(np.float64)
    weight = idf[coo.col] * t / (t + k1 * (1.0 - b + b * dl[coo.row] / avgdl))
    p = sparse.csr_matrix((weight.astype(np.float32), (coo.row, coo.col)), shape=(n, v))
    qrows, qcols = [], []
    for i, words in enumerate(_tokens(queries)):
        for w in words:
            j = vocab.get(w)
            if j is not None:
                qrows.append(i)
                qcols.append(j)
    q = sparse.csr_matrix((np.ones(len(qrows), np.float32), (qrows, qcols)), shape=(len(queries), v))
    q.sum_duplicates()
    return p, q


def bm25_scores(p: Any, q: Any, query_rows: np.ndarray, product_rows: np.ndarray) -> np.ndarray:
    """(len(query_rows), len(product_rows)) float32 dense BM25 scores of those pairs."""
    return np.asarray((q[query_rows] @ p[product_rows].T).toarray(), dtype=np.float32)


def bm25_top_rows(p: Any, q: Any, k: int, chunk: int = 1024, progress: bool = False) -> np.ndarray:
    """(len(queries), k) int64: per query row of `q`, its k best catalog rows by BM25 (`bm25_matrices`),
    best first, -1 past the last product with a positive score. Scored `chunk` queries at a time, so
    memory stays chunk x n_products floats (TrainConfig.experimental.distill_bm25_negatives)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    nq, n = q.shape[0], p.shape[0]
    out = np.full((nq, k), -1, dtype=np.int64)
    kk = min(k, n)
    if n == 0:
        return out
    pt = p.T.tocsr()
    from tqdm.auto import tqdm

    for start in tqdm(range(0, nq, chunk), desc="BM25 teacher columns", disable=not progress, leave=False):
        scores = np.asarray((q[start : start + chunk] @ pt).toarray(), dtype=np.float32)  # (c, n)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top_s = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        top_s = np.take_along_axis(top_s, order, 1)
        out[start : start + len(scores), :kk] = np.where(top_s > 0, top, -1)
    return out
