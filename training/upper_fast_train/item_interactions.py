"""Item-interaction embeddings: skip-gram over (product, interaction) session tokens with typed negatives.

After Etsy's "Learning Item-Interaction Embeddings for User Recommendations" (Zhao et al., 2018):
one vector per (product, interaction type); for a context token (p, i) the stronger types j > i that
the session lacks for p are negatives, a product that was only viewed gets two view negatives from
its own category, plus unigram^0.75 random negatives. Title subwords (the project's featurizer:
words, bigrams, character trigrams hashed into buckets) are averaged and added to every input
vector, fastText-style, so a new listing gets a vector from its title. Pairs and negatives are built
with numpy per batch; the embedding tables are PyTorch tensors updated by SGD with the gradients
written out (word2vec's update and linear learning-rate decay; `forward` is the autograd reference).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from upper_fast.data import Dataset
from upper_fast.featurizer import Featurizer, FeaturizerConfig, StringIdMap
from upper_fast.recommender import TOKEN_TYPES, write_recommendations_bundle
from upper_fast.searches import SEARCH_GAP_S

from upper_fast_train.item_sessions import (N_TYPES, SessionTokens, ViewsByGroup, build_sessions, category_negatives,
                                            describe, negative_distribution, only_viewed, random_negatives,
                                            skipgram_pairs, typed_negatives)

__all__ = ["ItemInteractionConfig", "ItemInteractionModel", "export_interactions", "load_run", "train_interactions"]

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ItemInteractionConfig:
    """Model and training settings (published: dim 100, window 5)."""

    dim: int = 100
    window: int = 5
    epochs: int = 5
    batch_size: int = 4096
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
    num_threads: int = 0                # torch threads; 0 = leave torch's default
    progress: bool = True
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("dim", "window", "epochs", "batch_size", "max_title_terms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.random_negatives < 1:
            raise ValueError(f"random_negatives must be >= 1, got {self.random_negatives}")
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


class ItemInteractionModel(torch.nn.Module):
    """Input vectors (token table + mean of the product title's subword rows) and output vectors."""

    def __init__(self, n_tokens: int, n_buckets: int, dim: int, title_terms: torch.Tensor | None) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(n_tokens, dim)
        self.context = torch.nn.Embedding(n_tokens, dim)
        torch.nn.init.uniform_(self.tokens.weight, -0.5 / dim, 0.5 / dim)
        torch.nn.init.zeros_(self.context.weight)
        self.subwords = None
        if title_terms is not None:
            self.subwords = torch.nn.EmbeddingBag(n_buckets, dim, mode="mean", padding_idx=0)
            torch.nn.init.uniform_(self.subwords.weight, -0.5 / dim, 0.5 / dim)
            with torch.no_grad():
                self.subwords.weight[0].zero_()
        self.register_buffer("title_terms", title_terms if title_terms is not None else torch.zeros(0, 1, dtype=torch.long))

    def input_vectors(self, token_ids: torch.Tensor, token_rows: torch.Tensor) -> torch.Tensor:
        """(B,) token ids and their product rows -> (B, dim)."""
        v = self.tokens(token_ids)
        if self.subwords is not None:
            v = v + self.subwords(self.title_terms[token_rows])
        return v

    def forward(self, centers: torch.Tensor, center_rows: torch.Tensor, which: torch.Tensor, contexts: torch.Tensor,
                negatives: torch.Tensor) -> torch.Tensor:
        """Summed negative-sampling loss of B pairs over U distinct centers.

        centers/center_rows (U,) token ids and product rows; which (B,) index into them; contexts (B,);
        negatives (B, K) token ids, -1 = none."""
        u = self.input_vectors(centers, center_rows)[which]             # (B, d)
        pos = (u * self.context(contexts)).sum(-1)                      # (B,)
        mask = negatives >= 0
        neg = torch.einsum("bd,bkd->bk", u, self.context(negatives.clamp(min=0)))  # (B, K)
        return skipgram_loss(pos, neg, mask)

    @torch.no_grad()
    def sgd_step(self, centers: torch.Tensor, center_rows: torch.Tensor, which: torch.Tensor, contexts: torch.Tensor,
                 negatives: torch.Tensor, lr: float) -> float:
        """One SGD step on `forward`'s summed loss with the gradients written out (word2vec's update);
        returns the loss. Same arguments as `forward`. Autograd's sparse backward of these gathers cost
        over half the step; rows are added without coalescing."""
        u = self.input_vectors(centers, center_rows)                    # (U, d)
        ub = u[which]                                                   # (B, d)
        mask = negatives >= 0
        neg_ids = negatives.clamp(min=0)
        v = self.context.weight[contexts]                               # (B, d)
        vn = self.context.weight[neg_ids]                               # (B, K, d)
        pos = (ub * v).sum(-1)                                          # (B,)
        neg = torch.einsum("bd,bkd->bk", ub, vn)                        # (B, K)
        loss = float(skipgram_loss(pos, neg, mask))
        g_pos = torch.sigmoid(pos) - 1.0                                # d loss / d pos, (B,)
        g_neg = torch.sigmoid(neg) * mask                               # d loss / d neg, (B, K)
        grad_ub = g_pos[:, None] * v + torch.einsum("bk,bkd->bd", g_neg, vn)    # (B, d)
        grad_u = torch.zeros_like(u).index_add_(0, which, grad_ub)      # (U, d)
        self.context.weight.index_add_(0, contexts, g_pos[:, None] * ub, alpha=-lr)
        self.context.weight.index_add_(0, neg_ids.reshape(-1), (g_neg[..., None] * ub[:, None, :]).reshape(-1, ub.shape[1]),
                                       alpha=-lr)
        self.tokens.weight.index_add_(0, centers, grad_u, alpha=-lr)
        if self.subwords is not None:
            terms = self.title_terms[center_rows]                       # (U, L), 0 = padding
            present = terms > 0
            share = grad_u / present.sum(1, keepdim=True).clamp(min=1)  # mean pooling: each term gets 1/n
            flat = present.reshape(-1)
            rows = share[:, None, :].expand(-1, terms.shape[1], -1).reshape(-1, share.shape[1])[flat]
            self.subwords.weight.index_add_(0, terms.reshape(-1)[flat], rows, alpha=-lr)
        return loss


def skipgram_loss(pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log sigma(pos) - sum over real negatives of log sigma(-neg), summed over the batch (word2vec's
    per-pair SGD step, so the learning rate does not depend on the batch size).

    pos (B,), neg (B, K), mask (B, K) bool."""
    return (-F.logsigmoid(pos) - (F.logsigmoid(-neg) * mask).sum(-1)).sum()


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


def train_interactions(dataset: Dataset, run_dir: str | Path | None = None,
                       config: ItemInteractionConfig | None = None) -> dict[str, Any]:
    """Train on the events before meta["train_end"] (all events without it); returns the metrics.

    With run_dir, writes config.json, vectors.npz and metrics.json there (after training succeeded)."""
    config = config or ItemInteractionConfig()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    log = dataset.log
    train_end = dataset.meta.get("train_end")
    if train_end is not None:
        import pyarrow.compute as pc

        log = log.filter(pc.less(log.column("timestamp"), int(train_end)))
    catalog = dataset.catalog
    product_ids = catalog.column("product_id").to_pylist()
    index = StringIdMap(product_ids)
    sessions = build_sessions(log, index, config.min_session_length, config.gap_s)
    vocab = Vocabulary(product_ids, _titles(catalog), np.unique(sessions.keys))
    model, stats = _fit(sessions, vocab, _product_groups(catalog, config.group_columns), config, rng)
    metrics = {"config": config.to_dict(), **describe(sessions), "vocabulary": int(len(vocab.keys)), **stats}
    if run_dir is not None:
        save_run(run_dir, config, vocab, model, metrics)
    metrics["model"] = model
    metrics["vocab"] = vocab
    return metrics


def _fit(sessions: SessionTokens, vocab: Vocabulary, groups: np.ndarray, config: ItemInteractionConfig,
         rng: np.random.Generator) -> tuple[ItemInteractionModel, dict[str, Any]]:
    from tqdm.auto import tqdm

    centers, contexts = skipgram_pairs(sessions.offsets, config.window)
    if len(centers) == 0:
        raise ValueError("the sessions yield no skip-gram pairs: every session is one token; the log needs shoppers "
                         "with several distinct (product, interaction) events in a session")
    token_ids = np.searchsorted(vocab.keys, sessions.keys)          # (n_tokens,)
    context_ids = token_ids[contexts]
    typed = typed_negatives(sessions.keys, sessions.offsets, contexts, vocab.keys) if config.typed_negatives else None
    views = ViewsByGroup.build(groups, vocab.keys)
    context_keys = sessions.keys[contexts]
    context_only_viewed = only_viewed(sessions.keys, sessions.offsets)[contexts]
    cumulative = negative_distribution(sessions.keys, vocab.keys)
    fz = config.featurizer_config()
    terms = None
    if config.subwords:
        titles = [t or "" for t in vocab.titles]
        terms = torch.from_numpy(Featurizer(fz).featurize(titles, config.max_title_terms))
    model = ItemInteractionModel(len(vocab.keys), fz.vocab_size, config.dim, terms)
    n_pairs = len(centers)
    total_steps = config.epochs * (-(-n_pairs // config.batch_size))
    step = 0
    epoch_times, losses = [], []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        # A center's pairs stay together (its title subwords are pooled once per batch); centers shuffled.
        order = np.argsort(rng.permutation(len(sessions.keys))[centers], kind="stable")
        total, batches = 0.0, 0
        bar = tqdm(range(0, n_pairs, config.batch_size), desc=f"item-interactions epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not config.progress, leave=False)
        for lo in bar:
            b = order[lo: lo + config.batch_size]
            parts = [random_negatives(rng, cumulative, (len(b), config.random_negatives))]
            if typed is not None:
                parts.append(typed[b])
                parts.append(category_negatives(rng, context_keys[b], context_only_viewed[b], views,
                                                config.category_negatives))
            negatives = torch.from_numpy(np.concatenate(parts, axis=1))
            unique, which = np.unique(centers[b], return_inverse=True)
            loss = model.sgd_step(torch.from_numpy(token_ids[unique]), torch.from_numpy(sessions.keys[unique] // N_TYPES),
                                  torch.from_numpy(which.astype(np.int64)), torch.from_numpy(context_ids[b]), negatives,
                                  config.lr * max(1e-4, 1.0 - step / total_steps))
            step += 1
            total += loss / len(b)
            batches += 1
        epoch_times.append(time.perf_counter() - start)
        losses.append(total / max(batches, 1))
    n_tokens = len(sessions.keys)
    return model, {"pairs_per_epoch": int(n_pairs), "epoch_seconds": epoch_times, "loss": losses,
                   "tokens_per_second": n_tokens * config.epochs / max(sum(epoch_times), 1e-9),
                   "pairs_per_second": n_pairs * config.epochs / max(sum(epoch_times), 1e-9)}


def token_vectors(model: ItemInteractionModel, vocab_keys: np.ndarray, batch: int = 65536) -> np.ndarray:
    """(V, dim) float32 input vectors (token + title subwords) of every vocabulary token."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(vocab_keys), batch):
            k = torch.from_numpy(vocab_keys[lo: lo + batch])
            out.append(model.input_vectors(torch.arange(lo, lo + len(k)), k // N_TYPES).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.tokens.embedding_dim), np.float32)


def subword_table(model: ItemInteractionModel, n_buckets: int) -> np.ndarray:
    """(n_buckets, dim) float32 subword rows (zeros without subwords)."""
    if model.subwords is None:
        return np.zeros((n_buckets, model.tokens.embedding_dim), np.float32)
    return model.subwords.weight.detach().numpy().astype(np.float32)


def save_run(run_dir: str | Path, config: ItemInteractionConfig, vocab: Vocabulary, model: ItemInteractionModel,
             metrics: dict[str, Any]) -> None:
    """RUN/config.json, RUN/vectors.npz (keys, vectors, context, subwords, product_ids, titles), RUN/metrics.json."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    fz = config.featurizer_config()
    np.savez(run / "vectors.npz.tmp.npz", keys=vocab.keys, vectors=token_vectors(model, vocab.keys),
             context=model.context.weight.detach().numpy().astype(np.float32),
             subwords=subword_table(model, fz.vocab_size), product_ids=np.array(vocab.product_ids, dtype=object).astype(str),
             titles=np.array([t or "" for t in vocab.titles], dtype=object).astype(str))
    (run / "vectors.npz.tmp.npz").replace(run / "vectors.npz")
    (run / "config.json").write_text(json.dumps({"kind": "item_interactions", **config.to_dict()}, indent=2) + "\n")
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k not in ("model", "vocab")},
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


def export_interactions(run_dir: str | Path, bundle_dir: str | Path, overwrite: bool = False, **index: Any) -> dict[str, Any]:
    """Write the recommendations bundle of a run (one index per interaction type); returns the manifest."""
    config, a = load_run(run_dir)
    keys, vectors = a["keys"], a["vectors"]
    rows, vecs = {}, {}
    for t, name in enumerate(TOKEN_TYPES):
        sel = keys % N_TYPES == t
        rows[name], vecs[name] = keys[sel] // N_TYPES, vectors[sel]
    return write_recommendations_bundle(
        bundle_dir, product_ids=a["product_ids"].tolist(), titles=a["titles"].tolist(),
        featurizer_config=config.featurizer_config().to_dict(), subwords=a["subwords"], rows=rows, vectors=vecs,
        model_version=f"item_interactions-{Path(run_dir).resolve().name}", overwrite=overwrite,
        extra={"training": {"dim": config.dim, "window": config.window, "epochs": config.epochs,
                            "typed_negatives": config.typed_negatives, "subwords": config.subwords}}, **index)
