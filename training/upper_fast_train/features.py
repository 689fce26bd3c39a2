"""Dataset -> model input arrays (docs/design.md "Model I/O").

Everything here is numpy; the training loop turns gathered batches into tensors. Products become one
row-aligned `ProductTable`; events become a compact `QueryTable` (unique query strings featurized
once, histories as row indices) from which any batch of ONNX query-tower inputs is gathered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast.products import quality_buckets, vocab_index
from upper_fast.searches import search_ids, searcher_codes
from upper_fast_train.config import INTERACTIONS, TrainConfig

__all__ = ["Vocab", "ProductTable", "QueryTable", "TrainingSet", "build_vocab", "product_table", "query_table", "session_starts", "training_set"]


@dataclass
class Vocab:
    """Categorical vocabularies and quantile-bucket edges, learned on the training catalog (vocab.json).

    Index 0 of countries and categories means unknown / missing; known values map to 1..len.
    """

    countries: list[str]
    categories: list[str]
    quality_columns: list[str]
    quality_edges: list[list[float]]  # per column, ascending interior bucket edges

    @property
    def n_countries(self) -> int:
        return len(self.countries) + 1

    @property
    def n_categories(self) -> int:
        return len(self.categories) + 1

    def country_index(self, values: list[Any]) -> np.ndarray:
        """(n,) int64 country indices, 0 for None / unknown."""
        return vocab_index(values, self.countries)

    def category_index(self, values: list[Any]) -> np.ndarray:
        return vocab_index(values, self.categories)

    def quality_bucket(self, catalog: Any) -> np.ndarray:
        """(n, F) int64: 0 for a missing value, else 1 + the number of edges <= the value."""
        return quality_buckets(catalog, self.quality_columns, self.quality_edges)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> Vocab:
        return cls(**json.loads(Path(path).read_text()))


def _strings(table: Any, name: str) -> list[Any]:
    return table.column(name).to_pylist() if table is not None and name in table.column_names else []


def build_vocab(dataset: Any, config: TrainConfig) -> Vocab:
    """Countries (shops, users, searchers), categories and quality-bucket edges from `dataset`."""
    countries = set(_strings(dataset.catalog, "shop_country"))
    countries |= set(_strings(dataset.users, "country")) | set(_strings(dataset.log, "country"))
    categories = set(_strings(dataset.catalog, "category"))
    columns = [c for c in dataset.quality_columns if c in dataset.catalog.column_names]
    if "price" in dataset.catalog.column_names and "price" not in columns:
        columns.append("price")
    qs = np.arange(1, config.model.quality_buckets) / config.model.quality_buckets
    edges = []
    for name in columns:
        v = np.asarray(dataset.catalog.column(name).cast("float64").fill_null(np.nan).to_numpy(zero_copy_only=False))
        v = v[np.isfinite(v)]
        edges.append(np.unique(np.quantile(v, qs)).tolist() if v.size else [])
    return Vocab(
        countries=sorted(c for c in countries if c),
        categories=sorted(c for c in categories if c),
        quality_columns=columns,
        quality_edges=edges,
    )


@dataclass
class ProductTable:
    """Product-tower inputs for every catalog row (n products)."""

    text_ids: np.ndarray  # (n, Lt) int64
    text_mask: np.ndarray  # (n, Lt) int64
    product_graph: np.ndarray  # (n, G) float32, zeros where no node
    product_graph_mask: np.ndarray  # (n,) float32
    product_terms: np.ndarray  # (n, Lp) int64
    shop_country: np.ndarray  # (n,) int64
    category: np.ndarray  # (n,) int64
    quality_buckets: np.ndarray  # (n, F) int64
    # (n, H) float32 mean-pooled text-encoder output, only with a frozen text encoder
    # (TrainConfig.text.freeze_text_encoder): the tower then skips its encoder. None otherwise.
    text_pooled: np.ndarray | None = None
    # (n, d) float32 second vectors of the products as history items, for a model with
    # TrainConfig.experimental.history_item_vectors (the product tower's vectors, refreshed during
    # training, or item-interaction view vectors); not a product-tower input.
    history_vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.text_ids.shape[0])

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Product-tower inputs of catalog rows (B,) int64, keyed by input name (text_pooled only when set)."""
        return {name: getattr(self, name)[rows] for name in self.__dataclass_fields__
                if name != "history_vectors" and getattr(self, name) is not None}


def product_table(catalog: Any, tokenizer: Any, featurizer: Any, vocab: Vocab, graph: Any, config: TrainConfig) -> ProductTable:
    """Featurize a catalog (pyarrow Table) whose rows align with `graph.product_vectors`.

    tokenizer: a `tokenizers.Tokenizer` (pad id 0); featurizer: `upper_fast.Featurizer`;
    graph: `GraphEmbeddings` (or None: no graph vectors, all masks 0).
    """
    from upper_fast_train.text import encode_texts, product_texts

    texts = product_texts(catalog)
    ids, mask = encode_texts(tokenizer, texts, config.text.text_max_len)
    n = catalog.num_rows
    if graph is not None and graph.product_vectors.shape[0] != n:
        raise ValueError(f"graph has {graph.product_vectors.shape[0]} products but the catalog has {n} rows")
    return ProductTable(
        text_ids=ids,
        text_mask=mask,
        product_graph=graph.product_vectors if graph is not None else np.zeros((n, config.graph.graph_dim), np.float32),
        product_graph_mask=(graph.product_mask if graph is not None else np.zeros(n, bool)).astype(np.float32),
        product_terms=featurizer.featurize(texts, config.featurizer.max_product_terms),
        shop_country=vocab.country_index(_strings(catalog, "shop_country") or [None] * n),
        category=vocab.category_index(_strings(catalog, "category") or [None] * n),
        quality_buckets=vocab.quality_bucket(catalog),
    )


@dataclass
class QueryTable:
    """Query-tower inputs of n events, stored compactly.

    query_terms:  (nq, Lq) int64 term ids of the nq distinct normalized query strings
    query_graph:  (nq, G) float32 graph vectors of those queries (zeros when unseen), query_graph_mask (nq,)
    event_query:  (n,) int64 row in the above per event
    hist_items:   (n, N) int64 catalog rows of the last N engaged products, -1 padded
    hist_types:   (n, N) int64 interaction codes, 0 padded
    hist_queries: (n, M) int64 rows of the last M distinct queries, -1 padded
    user_country: (n,) int64
    """

    query_terms: np.ndarray
    query_graph: np.ndarray
    query_graph_mask: np.ndarray
    event_query: np.ndarray
    hist_items: np.ndarray
    hist_types: np.ndarray
    hist_queries: np.ndarray
    user_country: np.ndarray
    # The nq normalized query strings of those rows (None when not kept); the MiniLM-teacher
    # distillation (TrainConfig.objective.distill_weight) tokenizes them.
    strings: list[str] | None = None

    def __len__(self) -> int:
        return int(self.event_query.shape[0])

    def take(self, idx: np.ndarray, product_graph: np.ndarray, personalized: bool | np.ndarray = True,
             item_vectors: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The ONNX query-tower inputs of events `idx` (B,); product_graph (n_products, G) float32.
        item_vectors (n_products, d) float32, when given: also "hist_item_vector", the history items'
        second vectors (TrainConfig.experimental.history_item_vectors).

        Where personalized is False (a bool for every row, or a (B,) bool mask per row) the user inputs
        are blanked: no history items or queries, country 0.
        """
        q = self.event_query[idx]
        keep = np.broadcast_to(np.asarray(personalized, dtype=bool), (len(q),))
        items = np.where(keep[:, None], self.hist_items[idx], -1)
        queries = np.where(keep[:, None], self.hist_queries[idx], -1)
        item_graph = product_graph[np.maximum(items, 0)] * (items >= 0)[..., None]
        hist_terms = self.query_terms[np.maximum(queries, 0)] * (queries >= 0)[..., None]
        out = {
            "query_terms": self.query_terms[q],
            "query_graph": self.query_graph[q],
            "query_graph_mask": self.query_graph_mask[q],
            "hist_item_graph": np.ascontiguousarray(item_graph, dtype=np.float32),
            "hist_item_type": np.where(items >= 0, self.hist_types[idx], 0).astype(np.int64),
            "hist_query_terms": hist_terms.astype(np.int64),
            "user_country": np.where(keep, self.user_country[idx], 0).astype(np.int64),
        }
        if item_vectors is not None:
            vectors = item_vectors[np.maximum(items, 0)] * (items >= 0)[..., None]
            out["hist_item_vector"] = np.ascontiguousarray(vectors, dtype=np.float32)
        return out


def _unique_index(values: list[str]) -> tuple[list[str], np.ndarray]:
    index: dict[str, int] = {}
    rows = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return list(index), rows


def _interaction_codes(names: list[Any]) -> np.ndarray:
    unknown = set(names) - set(INTERACTIONS)
    if unknown:
        raise ValueError(f"unknown interaction names {sorted(map(str, unknown))[:5]}; expected {sorted(INTERACTIONS)}")
    return np.fromiter((INTERACTIONS[n] for n in names), dtype=np.int64, count=len(names))


def query_table(
    events: Any,
    history_log: Any,
    product_ids: Any,
    user_country: dict[Any, str],
    featurizer: Any,
    vocab: Vocab,
    graph: Any,
    config: TrainConfig,
    at_search_start: bool = False,
) -> QueryTable:
    """Query-tower inputs of `events` (pyarrow Table: timestamp, user_id, query [, country]), with
    histories from `history_log` (the dataset's log: timestamp, user_id, query, product_id,
    interaction) taken by the core's `build_histories` strictly before each event's timestamp or,
    with at_search_start, strictly before the start of its search (`upper_fast.searches`): every
    event of one search gets the history a service had when the query was typed.

    product_ids: `upper_fast.StringIdMap` over the catalog's product ids (catalog rows).
    user_country: user_id -> country for signed-in users; signed-out events use the event's `country`
    column when present, else 0 (unknown).
    """
    from upper_fast import StringIdMap, build_histories

    keys = featurizer.query_keys([q or "" for q in events.column("query").to_pylist()])
    log_keys = featurizer.query_keys([q or "" for q in history_log.column("query").to_pylist()])
    strings, rows = _unique_index(keys + log_keys)
    event_query, log_query = rows[: len(keys)], rows[len(keys) :]

    ev_users = events.column("user_id").to_pylist()
    log_users = history_log.column("user_id").to_pylist()
    user_keys = sorted({u for u in ev_users + log_users if u is not None})
    users = StringIdMap([str(u) for u in user_keys])

    def user_rows(values: list[Any]) -> np.ndarray:
        rows = users.lookup(["" if v is None else str(v) for v in values])
        return np.where(np.array([v is None for v in values], dtype=bool), -1, rows).astype(np.int64)

    log_products = product_ids.lookup([str(p) for p in history_log.column("product_id").to_pylist()])
    ev_rows, log_rows = user_rows(ev_users), user_rows(log_users)
    at = np.ascontiguousarray(events.column("timestamp").to_numpy(), dtype=np.int64)
    log_ts = np.ascontiguousarray(history_log.column("timestamp").to_numpy(), dtype=np.int64)
    if at_search_start:
        # Searches over the events and the whole log together, so an event's search also starts at
        # engagements (and logged impressions) that are not themselves among `events`.
        searchers, _ = searcher_codes(ev_users + log_users,
                                      (_strings(events, "country") or [None] * events.num_rows)
                                      + (_strings(history_log, "country") or [None] * history_log.num_rows))
        _, both = search_ids(searchers, np.concatenate([event_query, log_query]), np.concatenate([at, log_ts]))
        at = np.ascontiguousarray(both[: len(at)])
    hist_items, hist_types, hist_queries = build_histories(
        ev_rows,
        at,
        log_rows,
        log_ts,
        np.ascontiguousarray(log_products, dtype=np.int64),
        _interaction_codes(history_log.column("interaction").to_pylist()).astype(np.int8),
        np.ascontiguousarray(log_query, dtype=np.int64),
        config.model.history_items,
        config.model.history_queries,
    )
    event_country = _strings(events, "country") or [None] * events.num_rows
    countries = [user_country.get(u) if u is not None else c for u, c in zip(ev_users, event_country)]
    if graph is not None:
        qg, qmask = graph.lookup_queries(strings)
    else:
        qg, qmask = np.zeros((len(strings), config.graph.graph_dim), np.float32), np.zeros(len(strings), np.float32)
    return QueryTable(
        query_terms=featurizer.featurize(strings, config.featurizer.max_query_terms),
        query_graph=qg,
        query_graph_mask=qmask,
        event_query=event_query,
        hist_items=np.asarray(hist_items, dtype=np.int64),
        hist_types=np.asarray(hist_types, dtype=np.int64),
        hist_queries=np.asarray(hist_queries, dtype=np.int64),
        user_country=vocab.country_index(countries),
        strings=strings,
    )


@dataclass
class TrainingSet:
    """Labelled training examples: one row per logged (query, user, product, interaction) event."""

    queries: QueryTable
    product_rows: np.ndarray  # (n,) int64 catalog rows
    labels: np.ndarray  # (n,) int64 interaction codes, 0 = logged impression (a negative)
    groups: np.ndarray  # (n,) int64 query-user key: rows of one group share their positives
    # (n,) int64 like groups, but each signed-out row its own group (all signed-out rows of a query
    # share one `groups` key); the targets of the personal-contrast loss. None = use groups.
    personal_groups: np.ndarray | None = None
    # (n, K) int64 catalog rows that the row's own search showed and its searcher did not engage
    # with (-1 = none); only with TrainConfig.objective.shown_negatives > 0, else None.
    shown_rows: np.ndarray | None = None
    # (nq, Lt) int64 text-encoder token ids / mask of the query rows (`queries.query_terms` order) that
    # get a teacher vector in the distillation (TrainConfig.objective.distill_weight); an all-zero mask row =
    # no teacher for that query. None = no distillation data.
    query_text_ids: np.ndarray | None = None
    query_text_mask: np.ndarray | None = None
    # BM25 teacher matrices (lexical_teacher.bm25_matrices; TrainConfig.experimental.distill_bm25): (n_products, V)
    # term weights and (nq, V) query term counts, scipy CSR. None = no BM25 in the teacher.
    bm25_products: Any = None
    bm25_queries: Any = None
    # (nq, K) int64 best catalog rows per query row by BM25 (lexical_teacher.bm25_top_rows; -1 = none):
    # extra teacher columns of the distillation (TrainConfig.experimental.distill_bm25_negatives). None = off.
    bm25_top: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def shown_products(search: np.ndarray, product_rows: np.ndarray, impression: np.ndarray, event: np.ndarray,
                   k: int, seed: int) -> np.ndarray:
    """(len(event), k) int64: per event row, k products drawn (seeded, with replacement) from the
    impressions of its own search, -1 where it has none.

    search: (n,) int64 search id per log row (`upper_fast.searches.search_ids`); product_rows: (n,)
    catalog rows; impression: (n,) bool, the row is a logged impression with a known product;
    event: the log row indices of the events."""
    out = np.full((len(event), k), -1, dtype=np.int64)
    imp = np.flatnonzero(impression)
    if len(imp) == 0 or len(event) == 0 or k == 0:
        return out
    imp = imp[np.argsort(search[imp], kind="stable")]
    by_search = search[imp]
    starts = np.searchsorted(by_search, search[event], side="left")
    n = np.searchsorted(by_search, search[event], side="right") - starts
    ok = n > 0
    draw = np.random.default_rng([seed, 11]).random((len(event), k))
    pick = starts[:, None] + (draw * n[:, None]).astype(np.int64)
    out[ok] = product_rows[imp[pick[ok]]]
    return out


def training_set(dataset: Any, product_ids: Any, featurizer: Any, vocab: Vocab, graph: Any, config: TrainConfig) -> TrainingSet:
    """Training-window events (timestamp < meta["train_end"]) with a known product, as examples:
    engagements as positives with their type, impressions as logged negatives (when configured)."""
    import pyarrow.compute as pc

    log = dataset.log
    train_end = int(dataset.meta["train_end"])
    window = log.filter(pc.less(log.column("timestamp"), train_end))
    rows = product_ids.lookup([str(p) for p in window.column("product_id").to_pylist()])
    labels = _interaction_codes(window.column("interaction").to_pylist())
    keep = rows >= 0
    if not config.objective.impressions_as_negatives:
        keep &= labels > 0
    elif config.objective.impression_sample < 1.0:
        drawn = np.random.default_rng([config.loop.seed, 7]).random(len(labels)) < config.objective.impression_sample
        keep &= (labels > 0) | drawn
    events = window.filter(keep)
    users = {}
    if dataset.users is not None:
        users = dict(zip(dataset.users.column("user_id").to_pylist(), dataset.users.column("country").to_pylist()))
    queries = query_table(events, window, product_ids, users, featurizer, vocab, graph, config, at_search_start=True)
    shown = None
    if config.objective.shown_negatives > 0:
        # The impressions of each engagement's own search (`upper_fast.searches`).
        searchers, _ = searcher_codes(window.column("user_id").to_pylist(),
                                      _strings(window, "country") or [None] * window.num_rows)
        _, qcodes = _unique_index(featurizer.query_keys([q or "" for q in window.column("query").to_pylist()]))
        search, _ = search_ids(searchers, qcodes, window.column("timestamp").to_numpy())
        shown = shown_products(search, rows, (labels == 0) & (rows >= 0), np.flatnonzero(keep & (labels > 0)),
                               config.objective.shown_negatives, config.loop.seed)
        full = np.full((int(keep.sum()), config.objective.shown_negatives), -1, dtype=np.int64)
        full[(labels[keep] > 0)] = shown
        shown = full
    user_ids = events.column("user_id").to_pylist()
    _, groups = _unique_index([f"{u}\x00{q}" for u, q in zip(user_ids, queries.event_query.tolist())])
    signed_out = np.fromiter((u is None for u in user_ids), dtype=bool, count=len(user_ids))
    personal = np.where(signed_out, groups.max(initial=-1) + 1 + np.arange(len(groups)), groups)
    return TrainingSet(queries=queries, product_rows=rows[keep].astype(np.int64), labels=labels[keep], groups=groups,
                       personal_groups=personal.astype(np.int64), shown_rows=shown)
