"""Tiny models and bundles for the serving tests (torch only here, never in upper_fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from upper_fast_train.export import export_query_tower, export_split_towers, parity_inputs

G, D, N, M, L = 8, 16, 6, 3, 32
FEATURIZER = {"word_buckets": 512, "bigram_buckets": 256, "trigram_buckets": 256, "max_query_terms": L,
              "max_product_terms": 64}
VOCAB = 1 + 512 + 256 + 256
COUNTRIES = ["DE", "FR", "US"]
THRESHOLDS = {"negative": -0.2, "click": 0.1, "favorite": 0.2, "add_to_cart": 0.3, "purchase": 0.4}


class TinyTower(torch.nn.Module):
    """A query-user tower with the exact ONNX input signature of docs/design.md."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.term = torch.nn.Embedding(VOCAB, D, padding_idx=0)
        self.graph = torch.nn.Linear(G, D)
        self.hist_graph = torch.nn.Linear(G, D)
        self.hist_type = torch.nn.Embedding(5, D, padding_idx=0)
        self.country = torch.nn.Embedding(len(COUNTRIES) + 1, D)
        self.mix = torch.nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True)

    def _bag(self, ids: torch.Tensor) -> torch.Tensor:
        m = (ids > 0).float().unsqueeze(-1)
        return (self.term(ids) * m).sum(-2) / m.sum(-2).clamp(min=1.0)

    def forward(self, *, query_terms, query_graph, query_graph_mask, hist_item_graph, hist_item_type,
                hist_query_terms, user_country):
        x = self._bag(query_terms) + self.graph(query_graph) * query_graph_mask.unsqueeze(-1)
        items = self.hist_graph(hist_item_graph) + self.hist_type(hist_item_type)
        seq = torch.cat([x.unsqueeze(1), items, self._bag(hist_query_terms)], dim=1)
        pad = torch.cat([torch.zeros_like(hist_item_type[:, :1]), hist_item_type,
                         (hist_query_terms.sum(-1) > 0).long()], dim=1) == 0
        pad[:, 0] = False
        h = self.mix(seq, src_key_padding_mask=pad)[:, 0]
        return F.normalize(h + x + self.country(user_country), dim=-1)


def tiny_onnx(path: Path, seed: int = 0) -> tuple[TinyTower, Path]:
    tower = TinyTower(seed).eval()
    example = parity_inputs(4, graph_dim=G, hist_items=N, hist_queries=M, query_terms=L, vocab_size=VOCAB,
                            n_countries=len(COUNTRIES))
    return tower, export_query_tower(tower, path, example)


def upper_tower(seed: int = 0) -> torch.nn.Module:
    """Our own QueryUserTower at tiny widths (the tower export_bundle ships, split-capable)."""
    from upper_fast_train.config import TrainConfig
    from upper_fast_train.towers import QueryUserTower, TermBag

    torch.manual_seed(seed)
    cfg = TrainConfig.from_flat(graph_dim=G, dim=D, term_dim=16, hidden=16, history_heads=2, country_dim=4, dropout=0.0,
                      word_buckets=FEATURIZER["word_buckets"], bigram_buckets=FEATURIZER["bigram_buckets"],
                      trigram_buckets=FEATURIZER["trigram_buckets"])
    lexical = torch.nn.Linear(cfg.model.term_dim, cfg.model.dim, bias=False)
    tower = QueryUserTower(cfg, TermBag(cfg.term_vocab_size, cfg.model.term_dim), len(COUNTRIES) + 1, lexical).eval()
    with torch.no_grad():  # fresh init leaves some parameters at 0 / 1: make every path matter
        for p in tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tower


def tiny_world(n_products: int = 300, n_users: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "mug", "lamp", "chair", "wool", "oak", "gift", "vintage", "ring"]
    titles = [" ".join(rng.choice(words, 3)) + f" p{i}" for i in range(n_products)]
    pv = rng.standard_normal((n_products, D)).astype(np.float32)
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    queries = sorted({" ".join(rng.choice(words, 2)) for _ in range(40)})
    users = pa.table({
        "user_id": [f"u{i}" for i in range(n_users)],
        "country": pa.array(rng.integers(0, len(COUNTRIES) + 1, n_users), pa.int32()),
        "hist_rows": pa.array([list(rng.integers(0, n_products, rng.integers(0, N + 3))) for _ in range(n_users)],
                              pa.list_(pa.int32())),
        "hist_queries": [list(rng.choice(queries, rng.integers(0, M + 2))) for _ in range(n_users)],
    })
    types = pa.array([list(rng.integers(1, 5, len(r))) for r in users.column("hist_rows").to_pylist()], pa.list_(pa.int8()))
    users = users.append_column("hist_types", types)
    return {
        "product_ids": [f"P{i:05d}" for i in range(n_products)],
        "titles": titles,
        "product_vectors": pv,
        "product_graph": (rng.standard_normal((n_products, G)) * (rng.random((n_products, 1)) < 0.7)).astype(np.float32),
        "quality": rng.random((n_products, 2)).astype(np.float32),
        "query_keys": queries,
        "query_graph": rng.standard_normal((len(queries), G)).astype(np.float32),
        "users": users,
    }


def tiny_bundle(tmp: Path, name: str = "bundle", *, seed: int = 0, n_products: int = 300, weights=(0.0, 0.0),
                scale: float = 0.1, mips_augmented: bool = True, index_dtype: str = "f32", split: bool = False,
                **write_kwargs) -> tuple[Path, torch.nn.Module, dict]:
    """split=True: the tower is our QueryUserTower (`upper_tower`) and the bundle carries the split
    serving form (user_tower.onnx + query_part.onnx); else the TinyTower, whole tower only."""
    from upper_fast.bundle import write_bundle

    if split:
        tower = upper_tower(seed)
        example = parity_inputs(4, graph_dim=G, hist_items=N, hist_queries=M, query_terms=L, vocab_size=VOCAB,
                                n_countries=len(COUNTRIES))
        onnx_path = export_query_tower(tower, tmp / f"{name}.onnx", example)
        (tmp / f"{name}-split").mkdir(exist_ok=True)
        write_kwargs["split_towers_onnx"] = export_split_towers(tower, tmp / f"{name}-split", example)
    else:
        tower, onnx_path = tiny_onnx(tmp / f"{name}.onnx", seed)
    world = tiny_world(n_products, seed=seed)
    write_bundle(
        tmp / name, query_tower_onnx=onnx_path, featurizer_config=FEATURIZER, query_keys=world["query_keys"],
        query_graph=world["query_graph"], product_ids=world["product_ids"], product_graph=world["product_graph"],
        product_vectors=world["product_vectors"], quality=world["quality"],
        hydration={"weights": list(weights), "scale": scale, "mips_augmented": mips_augmented,
                   "feature_names": ["rating", "sales"]},
        thresholds=THRESHOLDS, users=world["users"], countries=COUNTRIES, hist_items=N, hist_queries=M,
        model_version=f"tiny-{seed}", index_dtype=index_dtype, extra={"simulated": True},
        **{"ef_search": 200, **write_kwargs},
    )
    return tmp / name, tower, world
