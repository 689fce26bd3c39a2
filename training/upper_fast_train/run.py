"""Load a training run directory back into a usable model (docs/design.md "Training run directory")."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upper_fast_train.config import INTERACTIONS, TrainConfig
from upper_fast_train.features import ProductTable, QueryTable, Vocab, product_table, query_table
from upper_fast_train.towers import UpperModel, text_encoder_from_dir

__all__ = ["TrainedRun", "load_run"]

_RUN_FILES = ("config.json", "model.safetensors", "graph.npz", "tokenizer.json", "vocab.json", "text_encoder/config.json")


class TrainedRun:
    """A trained model with everything needed to featurize and encode (eval mode, CPU unless asked).

    `history` values accepted by `query_inputs`: a mapping with optional keys
    `products` (list of product ids, most recent first), `types` (interaction codes 1..4 or names,
    aligned with products), `queries` (recent query strings, most recent first) and `country`; None =
    signed out / no history.
    """

    def __init__(self, run_dir: str | Path, dataset: Any = None, device: str = "cpu") -> None:
        from safetensors.torch import load_model
        from tokenizers import Tokenizer

        from upper_fast import Featurizer, StringIdMap
        from upper_fast_train.graph import GraphEmbeddings
        from upper_fast_train.loop import build_model

        self.run_dir = Path(run_dir)
        missing = [f for f in _RUN_FILES if not (self.run_dir / f).exists()]
        if missing:
            raise FileNotFoundError(f"{self.run_dir} is not a complete training run: missing {missing}")
        self.config: dict[str, Any] = json.loads((self.run_dir / "config.json").read_text())
        self.train_config = TrainConfig.from_dict(self.config)
        self.vocab = Vocab.from_json(self.run_dir / "vocab.json")
        self.graph = _served_graph(GraphEmbeddings.load(self.run_dir / "graph.npz"), self.train_config)
        self.tokenizer = Tokenizer.from_file(str(self.run_dir / "tokenizer.json"))
        self.featurizer = Featurizer(self.train_config.featurizer)
        self.product_ids: list[str] = json.loads((self.run_dir / "product_ids.json").read_text())
        self._product_rows = StringIdMap(self.product_ids)
        self.device = torch.device(device)
        encoder = text_encoder_from_dir(self.run_dir / "text_encoder")
        self.model: UpperModel = build_model(self.train_config, self.tokenizer.get_vocab_size(), self.vocab, encoder)
        load_model(self.model, str(self.run_dir / "model.safetensors"), device=str(self.device))
        self.model.to(self.device).eval()
        self.dataset = dataset
        # (catalog, its history-item vectors, whether its rows were checked to be the training products')
        self._history_vector_cache: tuple[Any, np.ndarray, bool] | None = None

    # Products.
    def _graph_for(self, catalog: Any) -> Any:
        """Graph vectors aligned with `catalog` rows (training products by id; others get none)."""
        from upper_fast_train.graph import GraphEmbeddings

        rows = self._product_rows.lookup([str(p) for p in catalog.column("product_id").to_pylist()])
        known = rows >= 0
        vectors = np.zeros((catalog.num_rows, self.graph.dim), dtype=np.float32)
        mask = np.zeros(catalog.num_rows, dtype=bool)
        vectors[known] = self.graph.product_vectors[rows[known]]
        mask[known] = self.graph.product_mask[rows[known]]
        return GraphEmbeddings(self.graph.query_keys, self.graph.query_vectors, vectors, mask)

    def product_table(self, catalog: Any) -> ProductTable:
        """Product-tower inputs of every row of `catalog` (pyarrow Table); with a frozen text encoder
        (`freeze_text_encoder`) also its pooled text vectors (from `text_cache_dir` when cached there).

        The frozen passes run in float32 here, whatever `text.frozen_encode_dtype` training used:
        these are the vectors export writes and evaluation scores, and they must be what the bundle's
        float32 ONNX product tower computes for the same rows (export checks that to 1e-4, and live
        upserts are encoded by that tower). bfloat16 passes are a training-time speed-up only."""
        table = product_table(catalog, self.tokenizer, self.featurizer, self.vocab, self._graph_for(catalog), self.train_config)
        if self.train_config.text.freeze_text_encoder:
            from upper_fast_train.loop import pooled_text_vectors

            table.text_pooled = pooled_text_vectors(self.model, table, self.device, self.train_config.text.text_cache_dir,
                                                    dtype=torch.float32)
        return table

    @torch.no_grad()
    def encode_products(self, catalog: Any, batch_size: int = 512, progress: bool = False) -> np.ndarray:
        """(n, D) float32 L2-normalised vectors of the catalog's rows."""
        from upper_fast_train.loop import encode_product_rows

        table = self.product_table(catalog)
        return encode_product_rows(self.model, table, np.arange(len(table)), self.device, batch_size)

    # Queries.
    def query_inputs(self, queries: Sequence[str], histories: Sequence[Mapping[str, Any] | None] | None = None) -> dict[str, np.ndarray]:
        """ONNX query-tower inputs for query strings and optional per-query user histories."""
        cfg = self.train_config
        n = len(queries)
        histories = list(histories) if histories is not None else [None] * n
        if len(histories) != n:
            raise ValueError(f"got {len(histories)} histories for {n} queries")
        keys = [self.featurizer.query_key(q or "") for q in queries]
        strings = list(dict.fromkeys(keys))
        hist_items = np.full((n, cfg.model.history_items), -1, dtype=np.int64)
        hist_types = np.zeros((n, cfg.model.history_items), dtype=np.int64)
        hist_queries = np.full((n, cfg.model.history_queries), -1, dtype=np.int64)
        countries: list[Any] = []
        for i, h in enumerate(histories):
            h = h or {}
            products = list(h.get("products", []))[: cfg.model.history_items]
            rows = self._product_rows.lookup([str(p) for p in products]) if products else np.zeros(0, np.int64)
            types = [INTERACTIONS[t] if isinstance(t, str) else int(t) for t in list(h.get("types", [1] * len(products)))]
            for j, (r, t) in enumerate(zip(rows.tolist(), types)):
                hist_items[i, j], hist_types[i, j] = r, t
            for j, q in enumerate(list(h.get("queries", []))[: cfg.model.history_queries]):
                key = self.featurizer.query_key(q or "")
                if key not in strings:
                    strings.append(key)
                hist_queries[i, j] = strings.index(key)
            countries.append(h.get("country"))
        qg, qmask = self.graph.lookup_queries(strings)
        table = QueryTable(
            query_terms=self.featurizer.featurize(strings, cfg.featurizer.max_query_terms),
            query_graph=qg,
            query_graph_mask=qmask,
            event_query=np.array([strings.index(k) for k in keys], dtype=np.int64),
            hist_items=hist_items,
            hist_types=hist_types,
            hist_queries=hist_queries,
            user_country=self.vocab.country_index(countries),
        )
        item_vectors = None
        if self.train_config.experimental.history_item_vectors != "none":
            item_vectors = (self._history_vectors(None) if (hist_items >= 0).any()
                            else np.zeros((1, self.train_config.experimental.history_vector_dim or self.train_config.model.dim),
                                          np.float32))
        return table.take(np.arange(n), self.graph.product_vectors, personalized=True, item_vectors=item_vectors)

    def event_query_inputs(self, events: Any, dataset: Any = None, personalized: bool = True) -> dict[str, np.ndarray]:
        """ONNX inputs for logged events (timestamp, user_id, query [, country]) of `dataset`, each with
        the user's history strictly before its timestamp; personalized=False blanks user features."""
        from upper_fast import StringIdMap

        dataset = dataset if dataset is not None else self.dataset
        if dataset is None:
            raise ValueError("event_query_inputs needs the dataset (pass it here or to load_run)")
        users: dict[Any, str] = {}
        if dataset.users is not None:
            users = dict(zip(dataset.users.column("user_id").to_pylist(), dataset.users.column("country").to_pylist()))
        graph = self._graph_for(dataset.catalog)
        ids = StringIdMap([str(p) for p in dataset.catalog.column("product_id").to_pylist()])
        table = query_table(events, dataset.log, ids, users, self.featurizer, self.vocab, graph, self.train_config)
        return table.take(np.arange(len(table)), graph.product_vectors, personalized=personalized,
                          item_vectors=self._history_vectors(dataset.catalog))

    def _history_vectors(self, catalog: Any) -> np.ndarray | None:
        """The history items' second vectors of a model with experimental.history_item_vectors (None
        otherwise) for `catalog`'s rows (None = the training catalogue), kept per catalogue: this
        model's product vectors ("product") or the item-interaction run's view vectors ("interactions")."""
        exp = self.train_config.experimental
        if exp.history_item_vectors == "none":
            return None
        training = catalog is None  # rows of product_ids.json: the training catalogue
        if training:
            catalog = self.dataset.catalog if self.dataset is not None else None
        cached = self._history_vector_cache
        if training and not (cached is not None and cached[0] is catalog and cached[2]):
            if catalog is None or [str(p) for p in catalog.column("product_id").to_pylist()] != self.product_ids:
                raise ValueError("this model reads a second vector per history item: query_inputs with history "
                                 "products needs the training dataset (load_run(RUN, dataset))")
        if cached is None or cached[0] is not catalog:
            if exp.history_item_vectors == "interactions":
                from upper_fast_train.item_interactions import view_vectors

                vectors = view_vectors(exp.history_interactions_run, [str(p) for p in catalog.column("product_id").to_pylist()])
            else:
                vectors = self.encode_products(catalog)
            cached = (catalog, vectors, training)
        elif training:
            cached = (catalog, cached[1], True)
        self._history_vector_cache = cached
        return cached[1]

    @torch.no_grad()
    def encode_queries(self, inputs: Mapping[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
        """(n, D) float32 query vectors from ONNX-style inputs."""
        names = self.model.query_tower.input_names
        missing = set(names) - set(inputs)
        if missing:
            raise ValueError(f"query inputs missing {sorted(missing)}")
        n = len(inputs["query_terms"])
        out = np.zeros((n, self.train_config.model.dim), dtype=np.float32)
        for start in range(0, n, batch_size):
            part = {k: torch.from_numpy(np.ascontiguousarray(inputs[k][start : start + batch_size])).to(self.device) for k in names}
            out[start : start + batch_size] = self.model.query_tower(**part).float().cpu().numpy()
        return out


def load_run(run_dir: str | Path, dataset: Any = None, device: str = "cpu") -> TrainedRun:
    """Load RUN/ written by `upper_fast_train.train` (or `upper-fast train`)."""
    return TrainedRun(run_dir, dataset, device)


def _served_graph(graph: Any, config: TrainConfig) -> Any:
    """The graph as the model saw it in training: a side whose graph dropout was 1.0 never saw a graph
    vector, so evaluation and export give it none either (its fusion weights for them are untrained)."""
    from upper_fast_train.graph import GraphEmbeddings

    keys, queries, products, mask = graph.query_keys, graph.query_vectors, graph.product_vectors, graph.product_mask
    if config.graph.query_graph_dropout >= 1.0:
        keys, queries = [], np.zeros((0, graph.dim), np.float32)
    if config.graph.product_graph_dropout >= 1.0:
        products, mask = np.zeros_like(products), np.zeros_like(mask)
    return GraphEmbeddings(keys, queries, products, mask)
