"""Item-interaction embeddings: skip-gram over (product, interaction) session tokens with typed negatives.

After Etsy's "Learning Item-Interaction Embeddings for User Recommendations" (Zhao et al., 2018):
one vector per (product, interaction type); for a context token (p, i) the stronger types j > i that
the session lacks for p are negatives, a product that was only viewed gets two view negatives from
its own category, plus unigram^0.75 random negatives. Title subwords (the project's featurizer:
words, bigrams, character trigrams hashed into buckets) are averaged and added to every input
vector, fastText-style, so a new listing gets a vector from its title.

The sessions, their typed negatives and the categories' view tokens are handed once to the native
core (`upper_fast._core.SkipgramCorpus`); each epoch's center order, window pairs, unigram^0.75 and
category draws and the SGD itself (word2vec's update with a linear learning-rate decay) run natively
with the GIL released over `num_threads` threads (hogwild, as word2vec and fastText do), each center
drawing from its own generator seeded from (seed, epoch, position).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from upper_fast import _core
from upper_fast.data import Dataset
from upper_fast.featurizer import Featurizer, FeaturizerConfig, StringIdMap
from upper_fast.recommender import TOKEN_TYPES, recommendations_dir, write_recommendations_bundle
from upper_fast.searches import SEARCH_GAP_S

from upper_fast_train.item_sessions import (N_TYPES, VIEW, SessionTokens, ViewsByGroup, build_sessions, describe, only_viewed,
                                            typed_negatives)

__all__ = ["ItemInteractionConfig", "ItemInteractionTables", "export_interactions", "load_run", "session_corpus",
           "train_interactions"]

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ItemInteractionConfig:
    """Model and training settings (published: dim 100, window 5)."""

    dim: int = 100
    window: int = 5
    epochs: int = 10                    # word2vec's 5 undertrains session-sized corpora (docs/recommendations.md)
    batch_size: int = 65536             # about this many pairs per native call (progress and Ctrl-C between calls)
    lr: float = 0.025                   # word2vec's start value, decayed linearly to lr * 1e-4
    random_negatives: int = 5
    typed_negatives: bool = True        # False: plain skip-gram (random negatives only), the ablation
    category_negatives: int = 2
    subwords: bool = True
    word_buckets: int = 16384
    bigram_buckets: int = 16384
    trigram_buckets: int = 8192
    max_title_terms: int = 32
    min_session_length: int = 3
    gap_s: int = SEARCH_GAP_S
    group_columns: tuple[str, ...] = ("category", "shop_id")  # the first non-null one is a product's category
    seed: int = 0
    num_threads: int = 0                # SGD threads; 0 = all cores
    progress: bool = True
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("dim", "window", "epochs", "batch_size", "max_title_terms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.random_negatives < 1:
            raise ValueError(f"random_negatives must be >= 1, got {self.random_negatives}")
        if self.category_negatives < 0 or self.num_threads < 0:
            raise ValueError("category_negatives and num_threads must be >= 0, got "
                             f"{self.category_negatives} and {self.num_threads}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        object.__setattr__(self, "group_columns", tuple(self.group_columns))

    def featurizer_config(self) -> FeaturizerConfig:
        return FeaturizerConfig(word_buckets=self.word_buckets, bigram_buckets=self.bigram_buckets,
                                trigram_buckets=self.trigram_buckets, max_product_terms=self.max_title_terms)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["group_columns"] = list(self.group_columns)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemInteractionConfig:
        if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ValueError(f"item-interaction config schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown item-interaction config fields {unknown}; known: {sorted(names)}")
        return cls(**data)


@dataclasses.dataclass
class ItemInteractionTables:
    """The trained tables (numpy, updated in place by `upper_fast._core.SkipgramCorpus.sgd`).

    input (V, dim) float32 token input vectors; output (V, dim) float32 output (context) vectors;
    subwords (n_buckets, dim) float32 title subword rows or None (row 0 = padding, never trained);
    title_terms (n_products, max_terms) int64 subword buckets of each product's title, 0 = padding."""

    input: np.ndarray
    output: np.ndarray
    subwords: np.ndarray | None
    title_terms: np.ndarray

    @classmethod
    def initial(cls, n_tokens: int, n_buckets: int, dim: int, title_terms: np.ndarray | None,
                rng: np.random.Generator) -> ItemInteractionTables:
        """word2vec's start: input rows uniform in +-0.5/dim, output rows zero; subword rows like input."""
        def uniform(rows: int) -> np.ndarray:
            return ((rng.random((rows, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)

        subwords = None
        terms = np.zeros((0, 1), np.int64) if title_terms is None else np.ascontiguousarray(title_terms, dtype=np.int64)
        if title_terms is not None:
            subwords = uniform(n_buckets)
            subwords[0] = 0.0
        return cls(uniform(n_tokens), np.zeros((n_tokens, dim), np.float32), subwords, terms)

    def input_vectors(self, token_ids: np.ndarray, token_rows: np.ndarray) -> np.ndarray:
        """(m,) token ids and their product rows -> (m, dim) float32: the token row plus the mean of its
        title's subword rows (what the SGD pass uses as the center's vector)."""
        v = self.input[token_ids].copy()
        if self.subwords is not None:
            terms = self.title_terms[token_rows]                                 # (m, L)
            present = terms > 0
            sums = (self.subwords[terms] * present[..., None]).sum(1)            # (m, dim)
            v += sums / np.maximum(present.sum(1, keepdims=True), 1)
        return v.astype(np.float32)

    def sgd_pass(self, centers: np.ndarray, center_rows: np.ndarray, group_offsets: np.ndarray, targets: np.ndarray,
                 negatives: np.ndarray, lr_start: float, lr_end: float, num_threads: int = 0) -> float:
        """One native SGD pass over pairs grouped by center (GIL released); returns the summed loss.

        centers, center_rows (G,) int64; group_offsets (G + 1,) int64; targets (P,) int64;
        negatives (P, K) int64, -1 = none. See `upper_fast._core.skipgram_sgd`."""
        return float(_core.skipgram_sgd(self.input, self.output, self.subwords, self.title_terms, centers,
                                        center_rows, group_offsets, targets, negatives, lr_start, lr_end, num_threads))


def skipgram_loss(h: np.ndarray, output: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> float:
    """-log sigma(<h, out[target]>) - sum over real negatives of log sigma(-<h, out[neg]>), summed over
    pairs: the loss `sgd_pass` descends. h (P, dim) center vectors; targets (P,); negatives (P, K), -1 = none."""
    pos = np.einsum("pd,pd->p", h, output[targets]).astype(np.float64)
    neg = np.einsum("pd,pkd->pk", h, output[np.maximum(negatives, 0)]).astype(np.float64)
    return float(np.logaddexp(0, -pos).sum() + (np.logaddexp(0, neg) * (negatives >= 0)).sum())


def _product_groups(catalog: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """(n_products,) int64 group code per product: its first non-null column value, -1 if none."""
    n = catalog.num_rows
    labels: list[Any] = [None] * n
    for col in columns:
        if col not in catalog.column_names:
            continue
        values = catalog.column(col).to_pylist()
        labels = [lab if lab is not None else (None if v is None else (col, v)) for lab, v in zip(labels, values)]
    codes: dict[Any, int] = {}
    return np.fromiter((-1 if lab is None else codes.setdefault(lab, len(codes)) for lab in labels), np.int64, n)


@dataclasses.dataclass
class Vocabulary:
    """Product ids and titles of the catalogue and the sorted token keys (row * N_TYPES + type)."""

    product_ids: list[str]
    titles: list[str | None]
    keys: np.ndarray


def _titles(catalog: pa.Table) -> list[str | None]:
    return catalog.column("title").to_pylist() if "title" in catalog.column_names else [None] * catalog.num_rows


def train_interactions(dataset: Dataset, run_dir: str | Path | None = None, config: ItemInteractionConfig | None = None,
                       extra_logs: tuple[pa.Table, ...] = ()) -> dict[str, Any]:
    """Train on the dataset's train window (every event when it has no windows); returns the metrics.

    extra_logs: other engagement logs in the search log's schema (timestamp, user_id, product_id,
    interaction), cut to the same window and merged into the sessions. With run_dir, writes
    config.json, vectors.npz and metrics.json there (only after training succeeded)."""
    config = config or ItemInteractionConfig()
    rng = np.random.default_rng(config.seed)
    columns = ["timestamp", "user_id", "product_id", "interaction"]
    logs = [dataset.log.select(columns)]
    for i, extra in enumerate(extra_logs):
        missing = [c for c in columns if c not in extra.column_names]
        if missing:
            raise ValueError(f"extra log {i} lacks the columns {missing}: engagement logs need {columns} "
                             "(the search log's schema, docs/data.md)")
        logs.append(extra.select(columns).cast(logs[0].schema))
    log = pa.concat_tables(logs) if len(logs) > 1 else logs[0]
    if dataset.windows is not None:
        log = dataset.window("train", log.sort_by("timestamp")) if len(logs) > 1 else dataset.window("train", log)
    catalog = dataset.catalog
    product_ids = catalog.column("product_id").to_pylist()
    index = StringIdMap(product_ids)
    sessions = build_sessions(log, index, config.min_session_length, config.gap_s)
    vocab = Vocabulary(product_ids, _titles(catalog), np.unique(sessions.keys))
    tables, stats = _fit(sessions, vocab, _product_groups(catalog, config.group_columns), config, rng)
    metrics = {"config": config.to_dict(), "windows": dataset.windows.to_dict() if dataset.windows else None,
               **describe(sessions), "vocabulary": int(len(vocab.keys)), **stats}
    if run_dir is not None:
        save_run(run_dir, config, vocab, tables, metrics)
    metrics["tables"] = tables
    metrics["vocab"] = vocab
    return metrics


def _category_slots(views: ViewsByGroup, n_vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per vocabulary id (n_vocab,) int64: the first slot of its category in views.members, the
    category's size (0 = not a view token with a category) and its own slot there (-1 = none)."""
    start, size, slot = np.zeros(n_vocab, np.int64), np.zeros(n_vocab, np.int64), np.full(n_vocab, -1, np.int64)
    group = views.keys // views.stride                      # (m,) category of each member
    start[views.members] = views.starts[group]
    size[views.members] = views.sizes[group]
    slot[views.members] = np.arange(len(views.members), dtype=np.int64) - views.starts[group]
    return start, size, slot


def session_corpus(sessions: SessionTokens, vocab_keys: np.ndarray, groups: np.ndarray, title_terms: np.ndarray | None,
                   typed: bool = True) -> _core.SkipgramCorpus:
    """The native corpus (`upper_fast._core.SkipgramCorpus`) that every epoch draws from.

    sessions: the training sessions; vocab_keys (V,) sorted token keys; groups (n_products,) int64
    category code per product (-1 = none); title_terms (n_products, max_terms) int64 or None (no
    subwords); typed: hand over the typed negatives of every position (`typed_negatives`, the stronger
    types its product lacks in the session), else none."""
    n = len(sessions.keys)
    token_ids = np.searchsorted(vocab_keys, sessions.keys).astype(np.int64)            # (n,)
    typed_ids = (typed_negatives(sessions.keys, sessions.offsets, np.arange(n, dtype=np.int64), vocab_keys) if typed
                 else np.zeros((n, 0), np.int64))
    views = ViewsByGroup.build(groups, vocab_keys)
    start, size, slot = _category_slots(views, len(vocab_keys))
    terms = np.zeros((0, 1), np.int64) if title_terms is None else np.ascontiguousarray(title_terms, dtype=np.int64)
    return _core.SkipgramCorpus(token_ids, np.ascontiguousarray(sessions.offsets, dtype=np.int64),
                                (vocab_keys // N_TYPES).astype(np.int64), terms, np.ascontiguousarray(typed_ids),
                                only_viewed(sessions.keys, sessions.offsets).astype(np.int64), start, size, slot,
                                np.ascontiguousarray(views.members, dtype=np.int64))


def _fit(sessions: SessionTokens, vocab: Vocabulary, groups: np.ndarray, config: ItemInteractionConfig,
         rng: np.random.Generator) -> tuple[ItemInteractionTables, dict[str, Any]]:
    from tqdm.auto import tqdm

    fz = config.featurizer_config()
    terms = None
    if config.subwords:
        terms = Featurizer(fz).featurize([t or "" for t in vocab.titles], config.max_title_terms)
    corpus = session_corpus(sessions, vocab.keys, groups, terms, config.typed_negatives)
    n_pairs = int(corpus.n_pairs(config.window))
    if n_pairs == 0:
        raise ValueError("the sessions yield no skip-gram pairs: every session is one token; the log needs shoppers "
                         "with several distinct (product, interaction) events in a session")
    tables = ItemInteractionTables.initial(len(vocab.keys), fz.vocab_size, config.dim, terms, rng)
    n = corpus.n_positions
    per_call = max(1, round(config.batch_size * n / n_pairs))     # centers per native call
    category = config.category_negatives if config.typed_negatives else 0
    seed = config.seed & (2**64 - 1)
    epoch_times, sgd_times, losses = [], [], []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        sgd, total, pairs = 0.0, 0.0, 0
        order = corpus.epoch_order(seed, epoch)                    # (n,) centers, shuffled natively
        for lo in tqdm(range(0, n, per_call), disable=not config.progress, leave=False,
                       desc=f"item-interactions epoch {epoch + 1}/{config.epochs}", unit="call"):
            hi = min(n, lo + per_call)
            # word2vec's schedule over the centers of all epochs, linear from lr to lr * 1e-4.
            lr_start = config.lr * max(1e-4, 1.0 - (epoch * n + lo) / (config.epochs * n))
            lr_end = config.lr * max(1e-4, 1.0 - (epoch * n + hi) / (config.epochs * n))
            t0 = time.perf_counter()
            loss, done = corpus.sgd(tables.input, tables.output, tables.subwords, order[lo:hi], lr_start, lr_end, seed,
                                    epoch, config.window, config.random_negatives, config.typed_negatives, category,
                                    config.num_threads)
            sgd += time.perf_counter() - t0
            total += loss
            pairs += done
        epoch_times.append(time.perf_counter() - start)
        sgd_times.append(sgd)
        losses.append(total / max(pairs, 1))
    n_tokens = len(sessions.keys)
    seconds = max(sum(epoch_times), 1e-9)
    return tables, {"pairs_per_epoch": n_pairs, "epoch_seconds": epoch_times, "sgd_seconds": sgd_times,
                    "loss_per_pair": losses, "tokens_per_second": n_tokens * config.epochs / seconds,
                    "pairs_per_second": n_pairs * config.epochs / seconds}


def token_vectors(tables: ItemInteractionTables, vocab_keys: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(V, dim) float32 input vectors (token + mean title subwords) of every vocabulary token."""
    dim = tables.input.shape[1]
    out = [tables.input_vectors(np.arange(lo, min(lo + batch, len(vocab_keys))), vocab_keys[lo: lo + batch] // N_TYPES)
           for lo in range(0, len(vocab_keys), batch)]
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def save_run(run_dir: str | Path, config: ItemInteractionConfig, vocab: Vocabulary, tables: ItemInteractionTables,
             metrics: dict[str, Any]) -> None:
    """RUN/config.json, RUN/vectors.npz (keys, vectors, context, subwords, product_ids, titles), RUN/metrics.json."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    fz = config.featurizer_config()
    subwords = tables.subwords if tables.subwords is not None else np.zeros((fz.vocab_size, config.dim), np.float32)
    np.savez(run / "vectors.npz.tmp.npz", keys=vocab.keys, vectors=token_vectors(tables, vocab.keys),
             context=tables.output, subwords=subwords, product_ids=np.array(vocab.product_ids, dtype=object).astype(str),
             titles=np.array([t or "" for t in vocab.titles], dtype=object).astype(str))
    (run / "vectors.npz.tmp.npz").replace(run / "vectors.npz")
    (run / "config.json").write_text(json.dumps({"kind": "item_interactions", **config.to_dict()}, indent=2) + "\n")
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k not in ("tables", "vocab")},
                                                 indent=2) + "\n")


def load_run(run_dir: str | Path) -> tuple[ItemInteractionConfig, dict[str, np.ndarray]]:
    """(config, arrays) of a run written by `train_interactions`."""
    run = Path(run_dir)
    path = run / "config.json"
    if not path.is_file() or not (run / "vectors.npz").is_file():
        raise FileNotFoundError(f"{run} is not an item-interactions run (config.json and vectors.npz missing): "
                                "train one with `upper-fast train-interactions DATA RUN`")
    data = json.loads(path.read_text())
    if data.pop("kind", None) != "item_interactions":
        raise ValueError(f"{path} is not an item-interactions run config (kind != 'item_interactions')")
    with np.load(run / "vectors.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return ItemInteractionConfig.from_dict(data), arrays


def view_vectors(run_dir: str | Path, product_ids: list[str]) -> np.ndarray:
    """(len(product_ids), dim) float32: each product's view-token vector from an item-interaction run
    (token + title subwords, as trained), zeros for a product the run has no view token of; the
    history-item vectors of `TrainConfig.experimental.history_item_vectors = "interactions"`."""
    _, arrays = load_run(run_dir)
    run_ids = arrays["product_ids"].tolist()
    keys = arrays["keys"]
    views = keys % N_TYPES == VIEW
    row_of = StringIdMap([str(p) for p in run_ids]).lookup([str(p) for p in product_ids])
    vector_of = np.full(len(run_ids), -1, np.int64)
    vector_of[keys[views] // N_TYPES] = np.flatnonzero(views)
    out = np.zeros((len(product_ids), arrays["vectors"].shape[1]), np.float32)
    known = row_of >= 0
    pick = np.where(known, vector_of[np.maximum(row_of, 0)], -1)
    out[pick >= 0] = arrays["vectors"][pick[pick >= 0]]
    return out


def export_interactions(run_dir: str | Path, bundle_dir: str | Path, overwrite: bool = False, **index: Any) -> dict[str, Any]:
    """Write the recommendations bundle of a run (one index per interaction type); returns the manifest.

    bundle_dir: a new directory, or a search bundle (`upper-fast export`), which then holds the
    recommendations in its `recommendations/` folder. index: M, ef_construction, ef_search, seed."""
    config, a = load_run(run_dir)
    keys, vectors = a["keys"], a["vectors"]
    rows, vecs = {}, {}
    for t, name in enumerate(TOKEN_TYPES):
        sel = keys % N_TYPES == t
        rows[name], vecs[name] = keys[sel] // N_TYPES, vectors[sel]
    metrics_path = Path(run_dir) / "metrics.json"
    windows = json.loads(metrics_path.read_text()).get("windows") if metrics_path.is_file() else None
    return write_recommendations_bundle(
        recommendations_dir(bundle_dir), product_ids=a["product_ids"].tolist(), titles=a["titles"].tolist(),
        featurizer_config=config.featurizer_config().to_dict(), subwords=a["subwords"], rows=rows, vectors=vecs,
        model_version=f"item_interactions-{Path(run_dir).resolve().name}", overwrite=overwrite,
        extra={"training": {"dim": config.dim, "window": config.window, "epochs": config.epochs,
                            "typed_negatives": config.typed_negatives, "subwords": config.subwords,
                            "windows": windows}}, **index)
