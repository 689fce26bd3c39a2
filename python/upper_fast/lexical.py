"""The lexical channel of hybrid retrieval: a BM25 index over the catalogue text, and the fusion of its
hits with the dense channel's (docs/serving.md, "Hybrid retrieval").

The index is tantivy (the Rust search library, through its Python binding): an inverted index
memory-mapped from the bundle's `lexical/` directory. It was chosen over bm25s by query latency at 1M
products (docs/serving.md has the figures and the command). The binding scores every posting of the
query's terms (no block-max WAND skipping), so `LexicalIndex.max_postings` bounds a query's work.

Bundle files (optional, all or none; `upper_fast.bundle` checksums them like every other file):

    lexical.json   format + version, engine and its version, analyzer, fields, product count
    lexical/...    the tantivy index files (one document per bundle row, its row in a fast field)
    fusion.json    how the two channels are fused: "rrf" or "learned" (weights over FUSION_FEATURES)

Text analysis, the same at build and query time: tokens are runs of two or more word characters
(as in bm25s and scikit-learn), tokens longer than 40 bytes dropped, lowercase, English stopwords removed,
the English stemmer (default; `stem=False` leaves words as they are). A query is lowercased and stripped of everything but letters, digits
and spaces before parsing, so no user input is read as query syntax; a query of stopwords or
punctuation only has no terms and the channel returns no hits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast._core import FormatError

__all__ = ["DEFAULT_MAX_POSTINGS", "FUSION_FEATURES", "FusionModel", "LexicalIndex", "build_lexical_index", "catalogue_texts",
           "fit_logistic", "fusion_features", "lexical_query_text", "rrf_scores"]

LEXICAL_FORMAT = "upper_fast.lexical"
LEXICAL_FORMAT_VERSION = 1
LEXICAL_META = "lexical.json"
LEXICAL_DIR = "lexical"
FUSION_FILE = "fusion.json"
_FIELD = "text"
_ROW = "row"
_ANALYZER = "upper_fast_en"
# The standard RRF constant (Cormack et al. 2009): a hit at rank r adds 1 / (60 + r).
RRF_K = 60
DEFAULT_LEXICAL_K = 100
# LexicalIndex.max_postings's default: a query reads at most 100,000 postings. tantivy's Python
# binding scores every posting of the query's terms (its search wraps the top-k collector in a
# MultiCollector, which turns block-max WAND off), so a query costs ~89 us + ~29 us per term + ~7.0 ns
# per posting at 1M products on a 2-core AVX-512 VM (benchmarks/bench_lexical_budget.py, a fit over
# 2,000 Home Depot dev queries, correlation 0.976): 100,000 postings is ~0.8 ms, what a fused search
# can spend beside the dense channel within 1.5 ms. An absolute bound, not a share of the catalogue:
# a small catalogue's queries are cheap and keep every term (docs/serving.md "Hybrid retrieval").
DEFAULT_MAX_POSTINGS = 100_000
# Per fused candidate (docs/serving.md "Hybrid retrieval"). Ranks are 1-based; 0 = not in that channel.
FUSION_FEATURES = (
    "dense_score",        # hydrated score (cosine + boost), exact, also for lexical-only candidates
    "bm25_rel",           # BM25 score / the query's best BM25 score (0 when not a lexical hit)
    "dense_rr",           # 1 / (RRF_K + dense rank)
    "lexical_rr",         # 1 / (RRF_K + lexical rank)
    "tier",               # tier of the raw cosine / 4
    "bm25_rel_1word",     # bm25_rel on one-word queries, else 0
    "bm25_rel_6words",    # bm25_rel on queries of 6+ words, else 0
)
# Tokens are runs of 2+ word characters (bm25s's and scikit-learn's default pattern): single letters
# and digits ("x", "1" in "1/2 x 6 in.") are as common as stopwords in product titles, carry little
# and made the heaviest queries 20x slower at 1M products.
_TOKEN = r"\w\w+"
_NON_WORD = re.compile(r"\W+")


def _tantivy() -> Any:
    try:
        import tantivy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the lexical channel needs tantivy: pip install upper_fast (it is a core dependency) "
                          "or pip install tantivy") from exc
    return tantivy


def catalogue_texts(catalog: Any) -> list[str]:
    """One text per catalogue row: title, tags and category (what the product tower reads).

    catalog: a pyarrow Table with `title` and optionally `tags` (list<string>) and `category`.
    Missing values are empty strings; a row with no text is indexed and never matched.
    """
    titles = catalog.column("title").to_pylist()
    names = catalog.column_names
    tags = catalog.column("tags").to_pylist() if "tags" in names else [None] * len(titles)
    cats = catalog.column("category").to_pylist() if "category" in names else [None] * len(titles)
    out = []
    for title, tg, cat in zip(titles, tags, cats):
        parts = [title or ""] + [str(x) for x in (tg or []) if x] + ([str(cat)] if cat else [])
        out.append(" ".join(p for p in parts if p))
    return out


def lexical_query_text(query: str) -> str:
    """The query as the lexical channel parses it: lowercase, word characters and spaces only (no syntax)."""
    return _NON_WORD.sub(" ", query.lower()).strip()


def _analyzer(tantivy: Any, stem: bool) -> Any:
    builder = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(_TOKEN)).filter(tantivy.Filter.remove_long(40))
               .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.stopword("english")))
    if stem:
        builder = builder.filter(tantivy.Filter.stemmer("english"))
    return builder.build()


def _schema(tantivy: Any) -> Any:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field(_FIELD, stored=False, tokenizer_name=_ANALYZER, index_option="freq")
    sb.add_integer_field(_ROW, stored=False, indexed=True, fast=True)
    return sb.build()


def build_lexical_index(texts: Sequence[str], bundle_dir: str | os.PathLike[str], *, stem: bool = True,
                        fields: Sequence[str] = ("title", "tags", "category"),
                        heap_bytes: int = 512 << 20) -> dict[str, Any]:
    """Index texts[i] as bundle row i into `bundle_dir`/lexical/ and write lexical.json; returns it.

    texts: one string per bundle row (empty strings allowed). stem: apply the English (Snowball)
    stemmer, at index and query time (on the Home Depot train split it lifts BM25's nDCG@10 from
    0.325 to 0.367 and R@100 from 0.694 to 0.760: "doors" finds "door").
    One indexing thread and one merge at the end, so the index is a single segment (fastest to search).
    """
    tantivy = _tantivy()
    root = Path(bundle_dir)
    target = root / LEXICAL_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    index = tantivy.Index(_schema(tantivy), path=str(target))
    index.register_tokenizer(_ANALYZER, _analyzer(tantivy, stem))
    writer = index.writer(heap_size=heap_bytes, num_threads=1)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{row}] must be a str, not {type(text).__name__}")
        writer.add_document(tantivy.Document(**{_FIELD: text, _ROW: row}))
    writer.commit()
    writer.wait_merging_threads()
    for stale in target.glob(".tantivy-*.lock"):  # lock files of the writer, not index data
        stale.unlink()
    meta = {"format": LEXICAL_FORMAT, "format_version": LEXICAL_FORMAT_VERSION, "engine": "tantivy",
            "engine_version": str(getattr(tantivy, "__version__", "")), "n_products": len(texts),
            "fields": list(fields), "analyzer": {"tokenizer": f"regex {_TOKEN}", "remove_long": 40, "lowercase": True,
                                                 "stopwords": "english", "stemmer": "english" if stem else None},
            "scoring": "BM25 (tantivy: k1 1.2, b 0.75)"}
    (root / LEXICAL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


class LexicalIndex:
    """A loaded lexical index: BM25 top-k over the bundle rows. Thread-safe (tantivy searchers are)."""

    def __init__(self, index: Any, searcher: Any, meta: dict[str, Any], tantivy: Any, path: Path,
                 analyzer: Any = None) -> None:
        self.path = path
        self._index = index
        self._searcher = searcher
        self._tantivy = tantivy
        self._analyzer = analyzer
        self.meta = meta
        self.n_products = int(meta["n_products"])
        self._max_postings: int | None = DEFAULT_MAX_POSTINGS
        # A hit's row is its document id when the index is one segment numbered in row order (how
        # build_lexical_index writes it; checked at load): the row fast field is then not read, which
        # took ~90 us of a 1M-product query for 100 hits.
        self._doc_is_row = searcher.num_segments == 1 and _doc_ids_are_rows(tantivy, searcher, self.n_products)

    @property
    def max_postings(self) -> int | None:
        """The bound on a query's work, in postings (default `DEFAULT_MAX_POSTINGS`, 100,000): a query
        keeps its terms from the rarest up while their document frequencies sum to at most this (the
        rarest term always stays) and drops the rest; None searches every term. A BM25 query's time
        grows with the postings it reads (correlation 0.976 with that sum over the Home Depot dev queries
        at 1M products), so this bounds the slowest queries; a catalogue smaller than the bound is
        never cut by a one-term query. Its quality cost is in docs/serving.md "Hybrid retrieval".
        Settable: a positive int or None."""
        return self._max_postings

    @max_postings.setter
    def max_postings(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"max_postings must be None or a positive number of postings, got {value!r}")
        self._max_postings = None if value is None else int(value)

    def query_terms(self, query: str) -> list[tuple[str, int]]:
        """The query's index terms as the analyzer makes them (in query order, repeats kept), each with
        its document frequency."""
        text = lexical_query_text(query)
        if not text:
            return []
        return [(t, int(self._searcher.doc_freq(_FIELD, t))) for t in self._analyzer.analyze(text)]

    def _bounded_query(self, text: str) -> Any:
        """The query over the terms `max_postings` keeps; None when it keeps them all (parse as usual)."""
        terms = self._analyzer.analyze(text)
        df = {t: int(self._searcher.doc_freq(_FIELD, t)) for t in terms}
        budget = self._max_postings
        kept, total = set(), 0
        for t in sorted(df, key=df.__getitem__):  # rarest first; ties in query order
            if kept and total + df[t] > budget:
                break
            kept.add(t)
            total += df[t]
        if len(kept) == len(df):
            return None
        tv = self._tantivy
        return tv.Query.boolean_query([(tv.Occur.Should, tv.Query.term_query(self._index.schema, _FIELD, t, index_option="freq"))
                                       for t in terms if t in kept])

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike[str], n_products: int) -> LexicalIndex:
        """Open `bundle_dir`/lexical (memory-mapped). Raises upper_fast.FormatError when lexical.json is
        not ours, has an unknown version, or the index does not hold one document per bundle row."""
        tantivy = _tantivy()
        root = Path(bundle_dir)
        path = root / LEXICAL_META
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{path} is unreadable: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != LEXICAL_FORMAT:
            raise FormatError(f"{path} is not an upper_fast lexical index description")
        if meta.get("format_version") != LEXICAL_FORMAT_VERSION:
            raise FormatError(f"{path} has lexical format version {meta.get('format_version')!r}; this upper_fast "
                              f"reads {LEXICAL_FORMAT_VERSION} (re-export the bundle)")
        if meta.get("n_products") != n_products:
            raise FormatError(f"{path} indexes {meta.get('n_products')!r} products, the bundle has {n_products}")
        try:
            index = tantivy.Index.open(str(root / LEXICAL_DIR))
            analyzer = _analyzer(tantivy, bool((meta.get("analyzer") or {}).get("stemmer")))
            index.register_tokenizer(_ANALYZER, analyzer)
            index.reload()
            searcher = index.searcher()
        except ValueError as exc:
            raise FormatError(f"{root / LEXICAL_DIR} is not a readable tantivy index: {exc}") from None
        if searcher.num_docs != n_products:
            raise FormatError(f"{root / LEXICAL_DIR} holds {searcher.num_docs} documents for {n_products} products")
        return cls(index, searcher, meta, tantivy, root / LEXICAL_DIR, analyzer)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-k bundle rows for one query, best first: (rows (h,) int64, scores (h,) float32), h <= k.

        allowed: optional sorted unique int64 rows; only those can be returned (a term-set filter inside
        the index, so a narrow filter still finds its k best). A query without index terms (empty,
        stopwords or punctuation only) returns no hits. With `max_postings`, the query's most
        common terms may be left out.
        """
        text = lexical_query_text(query)
        if not text or k < 1:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        tv = self._tantivy
        q = self._bounded_query(text) if self._max_postings is not None else None
        if q is None:
            try:
                q = self._index.parse_query(text, [_FIELD])
            except ValueError:  # the sanitized text has no syntax: every word was a stopword
                return np.empty(0, np.int64), np.empty(0, np.float32)
        if allowed is not None:
            if allowed.size == 0:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            rows_q = tv.Query.term_set_query(self._index.schema, _ROW, allowed.tolist())
            q = tv.Query.boolean_query([(tv.Occur.Must, q), (tv.Occur.Must, tv.Query.const_score_query(rows_q, 0.0))])
        hits = self._searcher.search(q, int(k), count=False).hits
        if not hits:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores, addresses = zip(*hits)
        if self._doc_is_row:
            rows = np.fromiter((a.doc for a in addresses), np.int64, len(addresses))
        else:
            rows = np.array(self._searcher.fast_field_values(_ROW, list(addresses)), dtype=np.int64)
        return rows, np.array(scores, dtype=np.float32)

    def memory_bytes(self) -> int:
        """Bytes of the index files (memory-mapped: what a warm index keeps resident at most)."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def _doc_ids_are_rows(tantivy: Any, searcher: Any, n: int, chunk: int = 100_000) -> bool:
    """Whether document d of the index's one segment has row d, for every d (~0.3 s at 1M)."""
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = searcher.fast_field_values(_ROW, [tantivy.DocAddress(0, d) for d in range(start, stop)])
        if not np.array_equal(np.asarray(rows, dtype=np.int64), np.arange(start, stop)):
            return False
    return True


@dataclass(frozen=True)
class FusionModel:
    """How the channels' candidates are fused into one ranking (stored as fusion.json).

    method: "rrf" (sum of 1 / (rrf_k + rank) over the channels that found the hit; no tuning) or
        "learned" (weights . FUSION_FEATURES, fitted at export; see `fit_logistic`).
    lexical_k: lexical candidates per search (Retriever.search's default).
    report: how it was fitted (data, counts, held-out figures).
    """

    method: str = "rrf"
    weights: tuple[float, ...] = ()
    rrf_k: int = RRF_K
    lexical_k: int = DEFAULT_LEXICAL_K
    features: tuple[str, ...] = FUSION_FEATURES
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "learned"):
            raise ValueError(f"fusion method must be 'rrf' or 'learned', got {self.method!r}")
        if self.method == "learned" and (tuple(self.features) != FUSION_FEATURES or len(self.weights) != len(FUSION_FEATURES)):
            raise ValueError(f"a learned fusion needs {len(FUSION_FEATURES)} weights over {list(FUSION_FEATURES)}")
        if not isinstance(self.lexical_k, int) or self.lexical_k < 1 or not isinstance(self.rrf_k, int) or self.rrf_k < 0:
            raise ValueError("lexical_k must be an int >= 1 and rrf_k an int >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "weights": [float(w) for w in self.weights], "rrf_k": self.rrf_k,
                "lexical_k": self.lexical_k, "features": list(self.features), "report": self.report}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionModel:
        if not isinstance(d, dict):
            raise ValueError("fusion.json must hold an object")
        return cls(method=d.get("method", "rrf"), weights=tuple(float(w) for w in d.get("weights", ())),
                   rrf_k=int(d.get("rrf_k", RRF_K)), lexical_k=int(d.get("lexical_k", DEFAULT_LEXICAL_K)),
                   features=tuple(d.get("features", FUSION_FEATURES)), report=dict(d.get("report") or {}))

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike[str]) -> FusionModel:
        path = Path(bundle_dir) / FUSION_FILE
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
            raise FormatError(f"{path} is not a valid fusion description: {exc}") from None

    def save(self, bundle_dir: str | os.PathLike[str]) -> None:
        (Path(bundle_dir) / FUSION_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(m,) float64 fused scores of m candidates from their (m, F) `fusion_features`."""
        if self.method == "rrf":
            return rrf_scores(features)
        return features @ np.asarray(self.weights, dtype=np.float64)


def rrf_scores(features: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion from `fusion_features` rows: dense_rr + lexical_rr, (m,) float64."""
    return features[:, 2].astype(np.float64) + features[:, 3]


def fusion_features(dense_score: np.ndarray, cosine_tier: np.ndarray, dense_rank: np.ndarray,
                    lexical_rank: np.ndarray, bm25: np.ndarray, n_words: int, rrf_k: int = RRF_K) -> np.ndarray:
    """(m, len(FUSION_FEATURES)) float64 features of m fused candidates.

    dense_score (m,) f32 hydrated scores; cosine_tier (m,) int tiers 0..4; dense_rank / lexical_rank
    (m,) int 1-based ranks in each channel's list (0 = not found by that channel); bm25 (m,) f32 BM25
    scores (0 when not a lexical hit); n_words: the query's word count.
    """
    m = dense_score.shape[0]
    x = np.zeros((m, len(FUSION_FEATURES)), np.float64)
    x[:, 0] = dense_score
    best = float(bm25.max()) if m else 0.0
    if best > 0:
        x[:, 1] = bm25 / best
    x[:, 2] = np.where(dense_rank > 0, 1.0 / (rrf_k + np.maximum(dense_rank, 1)), 0.0)
    x[:, 3] = np.where(lexical_rank > 0, 1.0 / (rrf_k + np.maximum(lexical_rank, 1)), 0.0)
    x[:, 4] = cosine_tier / 4.0
    if n_words == 1:
        x[:, 5] = x[:, 1]
    elif n_words >= 6:
        x[:, 6] = x[:, 1]
    return x


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, sample_weight: np.ndarray | None = None,
                 iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (numpy only).

    x (m, F) float64 features, y (m,) {0, 1} labels -> (weights (F,), intercept). Features are
    standardised for the fit and the weights mapped back, so `x @ w + b` is the fitted logit.
    A constant feature gets weight 0.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (m, F) and y (m,), got {x.shape} and {y.shape}")
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    mu = np.average(x, axis=0, weights=sw)
    sd = np.sqrt(np.average((x - mu) ** 2, axis=0, weights=sw))
    live = sd > 1e-12
    z = np.zeros_like(x)
    z[:, live] = (x[:, live] - mu[live]) / sd[live]
    z = np.concatenate([z, np.ones((x.shape[0], 1))], axis=1)
    beta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * sw.sum())
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -30, 30)))
        grad = z.T @ (sw * (p - y)) + reg * beta
        hess = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    w = np.zeros(x.shape[1])
    w[live] = beta[:-1][live] / sd[live]
    b = float(beta[-1] - (w[live] * mu[live]).sum())
    return w, b
