"""A tiny bundle that can encode products (product tower ONNX + featurization), built in about a
second without a training run: untrained towers at tiny widths, a synthetic catalogue, and the
export's own functions for the product files and the quality normalisation."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from serve_tiny import COUNTRIES, FEATURIZER, G, M, N, THRESHOLDS, D, tiny_world, upper_tower

QUALITY = ["rating", "in_stock"]
CATEGORIES = ["home", "jewelry", "toys"]
WORDS = ["red", "blue", "mug", "lamp", "chair", "wool", "oak", "gift", "vintage", "ring", "silver", "linen"]


def tiny_catalog(n: int, seed: int = 0, prefix: str = "P") -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "product_id": [f"{prefix}{i:05d}" for i in range(n)],
        "title": [" ".join(rng.choice(WORDS, 3)) + f" item{i}" for i in range(n)],
        "tags": [list(rng.choice(WORDS, 2)) for _ in range(n)],
        "category": list(rng.choice(CATEGORIES, n)),
        "shop_id": [f"s{i % 7}" for i in range(n)],
        "shop_country": list(rng.choice(COUNTRIES, n)),
        "price": np.round(rng.uniform(2, 200, n), 2),
        "rating": np.round(rng.uniform(1, 5, n), 1),
        "in_stock": rng.integers(0, 2, n).astype(np.float64),
    })


def _config():
    from upper_fast_train.config import TrainConfig

    return TrainConfig.from_flat(
        graph_dim=G, dim=D, term_dim=16, hidden=16, history_heads=2, country_dim=4, category_dim=4, quality_dim=4,
        quality_buckets=4, dropout=0.0, t5_d_model=16, t5_d_ff=32, t5_layers=1, t5_heads=2, text_max_len=16,
        history_items=N, history_queries=M, **FEATURIZER)


def live_bundle(tmp: Path, name: str = "live", *, n_products: int = 200, seed: int = 0, product_tower: bool = True,
                **write_kwargs) -> tuple[Path, dict]:
    """A split-tower bundle over a synthetic catalogue of n_products whose vectors come from an
    (untrained) product tower; with product_tower, the bundle carries it as ONNX. Returns (path,
    world) with world["catalog"], world["users"], world["run"] (what export_product_files reads)."""
    from transformers import T5EncoderModel

    from upper_fast import Featurizer
    from upper_fast.bundle import write_bundle
    from upper_fast_train.export import (export_product_files, export_query_tower, export_split_towers,
                                         normalise_quality, parity_inputs)
    from upper_fast_train.features import Vocab, product_table
    from upper_fast_train.text import small_t5_config, train_tokenizer
    from upper_fast_train.towers import ProductTower, TermBag

    work = tmp / f"{name}-work"
    work.mkdir(parents=True, exist_ok=True)
    cfg = _config()
    catalog = tiny_catalog(n_products, seed)
    tokenizer = train_tokenizer(catalog.column("title").to_pylist() + WORDS, vocab_size=120, seed=seed)
    (work / "run").mkdir(exist_ok=True)
    tokenizer.save(str(work / "run" / "tokenizer.json"))
    vocab = Vocab(countries=list(COUNTRIES), categories=list(CATEGORIES), quality_columns=["price", *QUALITY],
                  quality_edges=[np.quantile(catalog.column(c).to_numpy(), [0.25, 0.5, 0.75]).tolist()
                                 for c in ["price", *QUALITY]])
    torch.manual_seed(seed)
    encoder = T5EncoderModel(small_t5_config(tokenizer.get_vocab_size(), 16, 1, 2, 32)).eval()
    tower = ProductTower(cfg, TermBag(cfg.term_vocab_size, cfg.model.term_dim), encoder, vocab.n_countries,
                         vocab.n_categories, len(vocab.quality_columns)).eval()
    with torch.no_grad():  # fresh init leaves some parameters at 0 / 1: make every path matter
        for p in tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    featurizer = Featurizer(cfg.featurizer)
    rng = np.random.default_rng(seed + 1)
    graph = (rng.standard_normal((n_products, G)) * (rng.random((n_products, 1)) < 0.7)).astype(np.float32)
    table = product_table(catalog, tokenizer, featurizer, vocab, None, cfg)
    table.product_graph, table.product_graph_mask = graph, (graph != 0).any(1).astype(np.float32)
    model = types.SimpleNamespace(product_tower=tower)
    with torch.no_grad():  # what export's encode does: the product tower on the training featurization
        vectors = tower(**{k: torch.from_numpy(v) for k, v in table.take(np.arange(n_products)).items()}).numpy()
    quality, normalisation = normalise_quality({c: catalog.column(c).to_numpy() for c in QUALITY})
    run = types.SimpleNamespace(train_config=cfg, vocab=vocab, graph=types.SimpleNamespace(dim=G), run_dir=work / "run",
                                tokenizer=tokenizer, featurizer=featurizer, model=model)
    extra = dict(write_kwargs.pop("extra", {}), simulated=True)
    if product_tower:
        files, parity = export_product_files(run, catalog, vectors, graph, work, seed=seed)
        write_kwargs["product_tower"] = files
        extra["product_tower_parity_max_abs"] = parity
    query_tower = upper_tower(seed)
    example = parity_inputs(4, graph_dim=G, hist_items=N, hist_queries=M, query_terms=FEATURIZER["max_query_terms"],
                            vocab_size=cfg.term_vocab_size, n_countries=len(COUNTRIES))
    onnx_path = export_query_tower(query_tower, work / "query_tower.onnx", example)
    split = export_split_towers(query_tower, work, example)
    world = tiny_world(n_products, seed=seed)
    write_bundle(
        tmp / name, query_tower_onnx=onnx_path, split_towers_onnx=split, featurizer_config=FEATURIZER,
        query_keys=world["query_keys"], query_graph=world["query_graph"],
        product_ids=catalog.column("product_id").to_pylist(), product_graph=graph, product_vectors=vectors,
        quality=quality, hydration={"weights": [0.6, 0.3], "scale": 0.2, "mips_augmented": True,
                                    "feature_names": QUALITY, "quality_normalisation": normalisation},
        thresholds=THRESHOLDS, users=world["users"], countries=COUNTRIES, hist_items=N, hist_queries=M,
        model_version=f"live-{seed}", extra=extra, ef_search=200,
        display=catalog.select(["product_id", "title", "category", "price"]), **write_kwargs)
    return tmp / name, {"catalog": catalog, "users": world["users"], "run": run, "vectors": vectors,
                        "query_tower": query_tower}
