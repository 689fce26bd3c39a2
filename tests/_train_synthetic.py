"""A tiny synthetic world for the training tests: arrays only, no dataset pipeline.

Product i has its own term ids; each example's query shares terms with its product, so a model that
learns anything scores its positives above random products.
"""

from __future__ import annotations

import numpy as np
import pytest

from upper_fast_train.config import TrainConfig
from upper_fast_train.features import ProductTable, QueryTable, TrainingSet, Vocab

G = 8
N_PRODUCTS = 48
TEXT_VOCAB = 40


def tiny_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = dict(
        word_buckets=200, bigram_buckets=100, trigram_buckets=100, dim=16, term_dim=16, hidden=16,
        history_heads=2, history_items=4, history_queries=3, graph_dim=G, t5_d_model=16, t5_d_ff=32,
        t5_layers=1, t5_heads=2, text_max_len=8, max_query_terms=6, max_product_terms=8, batch_size=16,
        uniform_negatives=8, inbatch_negatives=4, dynamic_negatives=0, dynamic_pool=32, dynamic_refresh=3,
        lr=1e-2, progress=False, country_dim=4, category_dim=4, quality_dim=4, quality_buckets=4,
        frozen_encode_dtype="float32",  # the same frozen-pass arithmetic on every machine (recorded values)
    )
    values.update(overrides)
    return TrainConfig.from_flat(**values)  # type: ignore[arg-type]


def tiny_vocab() -> Vocab:
    return Vocab(countries=["DE", "US"], categories=["a", "b", "c"], quality_columns=["rating"], quality_edges=[[1.0, 2.0, 3.0]])


def tiny_encoder(config: TrainConfig):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(vocab_size=TEXT_VOCAB, d_model=config.text.t5_d_model, d_kv=config.text.t5_d_model // config.text.t5_heads,
                 d_ff=config.text.t5_d_ff, num_layers=config.text.t5_layers, num_heads=config.text.t5_heads, dropout_rate=0.0,
                 pad_token_id=0, decoder_start_token_id=0)
    )


def tiny_world(config: TrainConfig, n_events: int = 160, seed: int = 0) -> tuple[TrainingSet, ProductTable]:
    rng = np.random.default_rng(seed)
    n = N_PRODUCTS
    vocab_size = config.term_vocab_size
    base_terms = rng.integers(1, vocab_size, size=(n, 4))
    product_terms = np.zeros((n, config.featurizer.max_product_terms), np.int64)
    product_terms[:, :4] = base_terms
    text_ids = np.zeros((n, config.text.text_max_len), np.int64)
    text_ids[:, :5] = rng.integers(3, TEXT_VOCAB, size=(n, 5))
    graph_mask = (rng.random(n) < 0.7).astype(np.float32)
    products = ProductTable(
        text_ids=text_ids,
        text_mask=(text_ids > 0).astype(np.int64),
        product_graph=(rng.standard_normal((n, G)) * graph_mask[:, None]).astype(np.float32),
        product_graph_mask=graph_mask,
        product_terms=product_terms,
        shop_country=rng.integers(0, 3, n),
        category=rng.integers(0, 4, n),
        quality_buckets=rng.integers(0, 5, (n, 1)),
    )
    n_queries = n
    query_terms = np.zeros((n_queries, config.featurizer.max_query_terms), np.int64)
    query_terms[:, :2] = base_terms[:, :2]  # query j describes product j
    qmask = (rng.random(n_queries) < 0.5).astype(np.float32)
    targets = rng.integers(0, n, n_events)
    labels = np.where(rng.random(n_events) < 0.3, 0, rng.integers(1, 5, n_events))
    # Logged impressions (label 0) show some other product for the query.
    rows = np.where(labels > 0, targets, (targets + rng.integers(1, n, n_events)) % n)
    hist_items = rng.integers(-1, n, (n_events, config.model.history_items))
    hist_items[: n_events // 4] = -1  # signed-out / no-history rows
    hist_queries = rng.integers(-1, n_queries, (n_events, config.model.history_queries))
    hist_queries[: n_events // 4] = -1
    queries = QueryTable(
        query_terms=query_terms,
        query_graph=(rng.standard_normal((n_queries, G)) * qmask[:, None]).astype(np.float32),
        query_graph_mask=qmask,
        event_query=targets.astype(np.int64),
        hist_items=hist_items.astype(np.int64),
        hist_types=np.where(hist_items >= 0, rng.integers(1, 5, hist_items.shape), 0).astype(np.int64),
        hist_queries=hist_queries.astype(np.int64),
        user_country=rng.integers(0, 3, n_events),
    )
    data = TrainingSet(queries=queries, product_rows=rows.astype(np.int64), labels=labels.astype(np.int64),
                       groups=rng.integers(0, n_events // 2, n_events).astype(np.int64))
    return data, products


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine, oversubscribed torch threads slow tiny steps 50x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
