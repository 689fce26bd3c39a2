"""Next-action evaluation of item-interaction vectors on the test window, with co-occurrence baselines.

A request is one add_to_cart (or purchase) token of a test-window session that has an earlier view
of another product: the source is the most recent such view, the target that product. A method
answers with the k products it ranks for the source (the source itself excluded); recall@k is the
share of requests whose target is among them, coverage the share of requests that get any candidate.
Sessions are built as for training (`item_sessions.build_sessions`) but keep every session of >= 2
tokens, so a short session's first view and cart still count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from upper_fast.data import Dataset
from upper_fast.featurizer import Featurizer, FeaturizerConfig, StringIdMap
from upper_fast.kernels import topk_inner_product
from upper_fast.recommender import token_type

from upper_fast_train.item_sessions import N_TYPES, SessionTokens, build_sessions, skipgram_pairs

__all__ = ["CooccurrenceRanker", "EmbeddingRanker", "evaluate_next_action", "next_action_requests", "window_sessions"]

VIEW = 0
Ranker = Callable[[np.ndarray, int], list[np.ndarray]]


def window_sessions(dataset: Dataset, product_index: StringIdMap, gap_s: int, window: str = "test") -> SessionTokens:
    """Token sessions (>= 2 tokens) of one window of the dataset ("train", "validation" or "test")."""
    if dataset.windows is None:
        raise ValueError("the dataset has no windows (no train_end in dataset.json): nothing marks the test window; "
                         "add train_end (and valid_end) to dataset.json")
    return build_sessions(dataset.window(window), product_index, min_length=2, gap_s=gap_s)


def next_action_requests(sessions: SessionTokens, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(source_rows, target_rows) int64: per `target` token, the latest earlier view of another product."""
    t = token_type(target)
    sources, targets = [], []
    for lo, hi in zip(sessions.offsets[:-1], sessions.offsets[1:]):
        keys = sessions.keys[lo:hi]
        rows, types = keys // N_TYPES, keys % N_TYPES
        for pos in np.flatnonzero(types == t):
            earlier = np.flatnonzero((types[:pos] == VIEW) & (rows[:pos] != rows[pos]))
            if len(earlier):
                sources.append(rows[earlier[-1]])
                targets.append(rows[pos])
    return np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64)


class EmbeddingRanker:
    """Nearest `to` vectors of a source's `from_` vector (exact inner product on normalised vectors).

    A source without a trained `from_` vector uses the normalised mean of its title's subword rows.

    backoff: the candidates are every product, not only those with a trained `to` token: a product
    the training sessions never gave that interaction stands in with its view vector, else its
    title's subword vector (input vectors only). "view" (or True) uses that vector as it is;
    "translate" maps it first by the least-squares linear map from view vectors to `to` vectors,
    fitted on the products that have both, so it scores on the `to` vectors' scale."""

    def __init__(self, arrays: dict[str, np.ndarray], featurizer_config: dict[str, Any], to: str,
                 candidates: str = "input", from_: str = "view", backoff: bool | str = False) -> None:
        keys, vectors = arrays["keys"], arrays["vectors"]
        n = len(arrays["product_ids"])
        self.vectors = _normalised(vectors)
        self.subwords = arrays["subwords"]
        self.titles = arrays["titles"]
        self.featurizer = Featurizer(FeaturizerConfig.from_dict(featurizer_config))
        self.source_pos = _positions(keys, n, token_type(from_))  # each product's `from_` vector, -1 = none
        cand = np.flatnonzero(keys % N_TYPES == token_type(to))
        self.cand_rows = keys[cand] // N_TYPES
        # "input": the candidates' own token vectors (second order: shared contexts); "context": their
        # output vectors (first order: what the skip-gram objective scores against a center).
        table = self.vectors if candidates == "input" else _normalised(arrays["context"])
        self.cand_vectors = np.ascontiguousarray(table[cand])
        mode = {False: None, True: "view"}.get(backoff, backoff) if isinstance(backoff, bool) else backoff
        if mode not in (None, "view", "translate"):
            raise ValueError(f"backoff must be False, True, 'view' or 'translate', got {backoff!r}")
        if mode is not None:
            if candidates != "input":
                raise ValueError("backoff stands in with view (input) vectors: use candidates='input'")
            views = _positions(keys, n, VIEW)
            missing = np.setdiff1d(np.arange(n, dtype=np.int64), self.cand_rows)
            extra, ok = self.source_vectors(missing, views)
            if mode == "translate":
                both = self.cand_rows[views[self.cand_rows] >= 0]
                to_pos = _positions(keys, n, token_type(to))
                w, *_ = np.linalg.lstsq(self.vectors[views[both]], self.vectors[to_pos[both]], rcond=None)
                extra = _normalised(extra @ w.astype(np.float32))
            self.cand_rows = np.concatenate([self.cand_rows, missing[ok]])
            self.cand_vectors = np.ascontiguousarray(np.concatenate([self.cand_vectors, extra[ok]]))

    def source_vectors(self, rows: np.ndarray, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((m, dim) float32 vectors, (m,) bool has_vector): each row's trained vector at `positions`
        (default: the `from_` type's), else its title's subword vector."""
        pos = self.source_pos if positions is None else positions
        out = np.zeros((len(rows), self.vectors.shape[1]), np.float32)
        ok = np.zeros(len(rows), bool)
        for i, r in enumerate(rows):
            if pos[r] >= 0:
                out[i], ok[i] = self.vectors[pos[r]], True
            elif self.titles[r]:
                terms = self.featurizer.term_ids(str(self.titles[r]))
                v = self.subwords[terms[terms > 0]].mean(axis=0) if (terms > 0).any() else np.zeros(out.shape[1])
                norm = float(np.linalg.norm(v))
                if norm > 0:
                    out[i], ok[i] = v / norm, True
        return out, ok

    def __call__(self, sources: np.ndarray, k: int) -> list[np.ndarray]:
        if len(self.cand_rows) == 0:
            return [np.zeros(0, np.int64) for _ in sources]
        vecs, ok = self.source_vectors(sources)
        top = topk_inner_product(np.ascontiguousarray(vecs), self.cand_vectors, min(k + 1, len(self.cand_rows)))
        out = []
        for i, s in enumerate(sources):
            if not ok[i]:
                out.append(np.zeros(0, np.int64))
                continue
            rows = self.cand_rows[top.ids[i][: top.counts[i]]]
            out.append(rows[rows != s][:k])
        return out


class CooccurrenceRanker:
    """Products ranked by how often their `to` token shares a training session with the source's
    `from_` token (at most `window` tokens apart, either order; ties by row): from_="view", to="view"
    is co-viewed; "add_to_cart" -> "add_to_cart" co-carted; "view" -> "add_to_cart" viewed-with-carted,
    the count a "viewed this, carted that" list is built from."""

    def __init__(self, sessions: SessionTokens, n_products: int, to: str, window: int = 50, from_: str = "view") -> None:
        centers, contexts = skipgram_pairs(sessions.offsets, window)
        a, b = sessions.keys[centers], sessions.keys[contexts]
        keep = (a % N_TYPES == token_type(from_)) & (b % N_TYPES == token_type(to)) & (a // N_TYPES != b // N_TYPES)
        src, dst = a[keep] // N_TYPES, b[keep] // N_TYPES
        self.counts = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(n_products, n_products))
        self.counts.sum_duplicates()

    def __call__(self, sources: np.ndarray, k: int) -> list[np.ndarray]:
        out = []
        for s in sources:
            lo, hi = self.counts.indptr[s], self.counts.indptr[s + 1]
            cols, vals = self.counts.indices[lo:hi], self.counts.data[lo:hi]
            order = np.lexsort((cols, -vals))[:k]  # most co-occurrences first, ties by row
            out.append(cols[order].astype(np.int64))
        return out


def evaluate_next_action(ranker: Ranker, sources: np.ndarray, targets: np.ndarray,
                         ks: tuple[int, ...] = (10, 100)) -> dict[str, float]:
    """recall@k for each k, coverage (share of requests with any candidate) and the request count;
    "recall@100" is the primary figure."""
    if len(sources) == 0:
        return {**{f"recall@{k}": float("nan") for k in ks}, "coverage": float("nan"), "requests": 0}
    lists = ranker(sources, max(ks))
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([t in cand[:k] for cand, t in zip(lists, targets)]))
    out["coverage"] = float(np.mean([len(c) > 0 for c in lists]))
    out["requests"] = int(len(sources))
    return out


def _positions(keys: np.ndarray, n: int, type_code: int) -> np.ndarray:
    """(n,) int64: each product row's position in `keys` for one token type, -1 where it has none."""
    pos = np.full(n, -1, dtype=np.int64)
    at = np.flatnonzero(keys % N_TYPES == type_code)
    pos[keys[at] // N_TYPES] = at
    return pos


def _normalised(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), dtype=np.float32)

