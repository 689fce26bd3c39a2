"""Everything before the loop: the run directory's tokenizer, vocab, graph and encoder weights, the
training arrays read back from it, the model, and the distillation teacher's inputs.

Run directory layout: docs/design.md "Training run directory".
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from upper_fast_train.config import TrainConfig, resolve_text_encoder
from upper_fast_train.distributed import resolve_device
from upper_fast_train.encode import frozen_encode_dtype, pool_token_rows, pooled_text_vectors
from upper_fast_train.features import ProductTable, TrainingSet, Vocab, build_vocab, product_table, training_set
from upper_fast_train.objective import DistillTeacher
from upper_fast_train.pseudo_queries import with_pseudo_queries
from upper_fast_train.towers import UpperModel, build_text_encoder

__all__ = ["TrainingArrays", "build_model", "build_teacher", "check_trainable", "distill_token_rows", "prepare_run_dir",
           "teacher_vectors", "training_arrays", "write_run_config"]


def build_model(config: TrainConfig, text_vocab: int, vocab: Vocab, text_encoder: torch.nn.Module | None = None) -> UpperModel:
    """A fresh UpperModel for `config` (the text encoder built from config unless given)."""
    encoder = text_encoder if text_encoder is not None else build_text_encoder(config, text_vocab)
    return UpperModel(config, encoder, vocab.n_countries, vocab.n_categories, len(vocab.quality_columns))


def check_trainable(dataset: Any, config: TrainConfig) -> None:
    """A clear error for a run that cannot train: no engagement in the training window, or a text
    encoder that is not there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from upper_fast.interactions import ENGAGEMENTS

    log = dataset.log
    in_window = pc.less(log.column("timestamp"), pa.scalar(int(dataset.meta["train_end"]), pa.int64()))
    engaged = pc.is_in(log.column("interaction"), value_set=pa.array(ENGAGEMENTS))
    if not pc.any(pc.and_(in_window, engaged)).as_py():
        raise ValueError(f"the training window (timestamp < train_end = {dataset.meta['train_end']}) has no engagement "
                         f"rows ({', '.join(ENGAGEMENTS)}): the model learns from engagements, impressions alone teach it "
                         "nothing. Check the log's interaction column and train_end in dataset.json")
    resolve_text_encoder(config.text.text_encoder)


def prepare_run_dir(dataset: Any, run: Path, config: TrainConfig, resume: bool) -> dict[str, Any]:
    """Tokenizer, vocab, graph embeddings, text-encoder config and pre-trained weights, written to
    `run` (kept as they are when resuming). Returns the preparation's timings."""
    import pyarrow.compute as pc

    from upper_fast_train.graph import train_graph_embeddings
    from upper_fast_train.text import product_texts, train_tokenizer

    ckpt = run / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    if resume and (run / "graph.npz").exists() and (run / "tokenizer.json").exists():
        return {}
    out: dict[str, Any] = {}
    train_end = int(dataset.meta["train_end"])
    t0 = time.perf_counter()
    encoder_dir = resolve_text_encoder(config.text.text_encoder)
    if encoder_dir:
        src = Path(encoder_dir) / "tokenizer.json"
        if not src.exists():
            raise ValueError(f"{encoder_dir} has no tokenizer.json (a Hugging Face fast tokenizer is needed)")
        shutil.copyfile(src, run / "tokenizer.json")
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(src))
    else:
        window = dataset.log.filter(pc.less(dataset.log.column("timestamp"), train_end))
        texts = product_texts(dataset.catalog) + window.column("query").to_pylist()
        tokenizer = train_tokenizer(texts, vocab_size=config.text.tokenizer_vocab, seed=config.loop.seed)
        tokenizer.save(str(run / "tokenizer.json"))
    out["tokenizer_s"] = time.perf_counter() - t0

    build_vocab(dataset, config).to_json(run / "vocab.json")
    t0 = time.perf_counter()
    graph = train_graph_embeddings(
        dataset,
        train_end,
        dim=config.graph.graph_dim,
        seed=config.loop.seed,
        walks_per_node=config.graph.graph_walks_per_node,
        epochs=config.graph.graph_epochs,
        progress=config.loop.progress,
        workers=config.graph.graph_workers,
        featurizer_config=config.featurizer,
        word_weight=config.graph.graph_word_weight,
    )
    graph.save(run / "graph.npz")
    out["graph_s"] = time.perf_counter() - t0

    encoder = build_text_encoder(config, tokenizer.get_vocab_size())
    encoder.config.save_pretrained(run / "text_encoder")
    if not config.text.text_encoder and config.text.pretrain:
        from safetensors.torch import save_file

        from upper_fast_train.pretrain import doc2query_pairs, pretrain_doc2query
        from upper_fast_train.text import small_t5_config

        t0 = time.perf_counter()
        texts, queries = doc2query_pairs(dataset, train_end)
        if len(texts) > config.text.pretrain_max_pairs:
            pick = np.sort(np.random.default_rng(config.loop.seed).choice(len(texts), config.text.pretrain_max_pairs, replace=False))
            texts, queries = [texts[i] for i in pick], [queries[i] for i in pick]
        stats: dict[str, float] = {}
        steps = max(1, config.text.pretrain_epochs * len(texts) // 32)
        state = pretrain_doc2query(
            texts,
            queries,
            tokenizer,
            small_t5_config(tokenizer.get_vocab_size(), config.text.t5_d_model, config.text.t5_layers, config.text.t5_heads, config.text.t5_d_ff),
            steps=steps,
            batch_size=32,
            seed=config.loop.seed,
            device=str(resolve_device(config.loop.device)),
            progress=config.loop.progress,
            max_text_length=config.text.text_max_len,
            stats=stats,
        )
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(ckpt / "encoder_init.safetensors"))
        out["pretrain"] = {**stats, "seconds": time.perf_counter() - t0}
    elif config.text.text_encoder:
        from safetensors.torch import save_file

        save_file({k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}, str(ckpt / "encoder_init.safetensors"))
    return out


class TrainingArrays(NamedTuple):
    """What the loop trains on, read from a prepared run directory and the dataset."""

    tokenizer: Any
    graph: Any  # graph.GraphEmbeddings
    vocab: Vocab
    products: ProductTable
    data: TrainingSet
    featurize_s: float  # seconds to featurize (after reading the run directory's files)


def training_arrays(dataset: Any, run: Path, config: TrainConfig, progress: bool = False) -> TrainingArrays:
    """The product table and training examples of `dataset` featurized with the run directory's
    tokenizer, vocab and graph; with distillation on, the teacher's query token rows and, when asked,
    the BM25 matrices and each query's best BM25 products."""
    from tokenizers import Tokenizer

    from upper_fast import Featurizer, StringIdMap
    from upper_fast_train.graph import GraphEmbeddings

    featurizer = Featurizer(config.featurizer)
    tokenizer = Tokenizer.from_file(str(run / "tokenizer.json"))
    graph = GraphEmbeddings.load(run / "graph.npz")
    vocab = Vocab.from_json(run / "vocab.json")
    t0 = time.perf_counter()
    product_ids = StringIdMap([str(p) for p in dataset.catalog.column("product_id").to_pylist()])
    products = product_table(dataset.catalog, tokenizer, featurizer, vocab, graph, config)
    data = training_set(with_pseudo_queries(dataset, config), product_ids, featurizer, vocab, graph, config)
    if config.objective.distill_weight > 0:
        assert data.queries.strings is not None
        counts = np.bincount(data.queries.event_query, minlength=len(data.queries.strings))
        data.query_text_ids, data.query_text_mask = distill_token_rows(data.queries.strings, tokenizer, config, counts)
        if config.experimental.distill_bm25 > 0 or config.experimental.distill_bm25_negatives > 0:
            from upper_fast_train.lexical_teacher import bm25_matrices, bm25_top_rows
            from upper_fast_train.text import product_texts

            data.bm25_products, data.bm25_queries = bm25_matrices(product_texts(dataset.catalog), data.queries.strings)
            if config.experimental.distill_bm25_negatives > 0:
                data.bm25_top = bm25_top_rows(data.bm25_products, data.bm25_queries, config.experimental.distill_bm25_negatives,
                                              progress=progress)
    return TrainingArrays(tokenizer, graph, vocab, products, data, time.perf_counter() - t0)


def write_run_config(
    run: Path, config: TrainConfig, text_vocab: int, vocab: Vocab, graph: Any, n_products: int, data_dir: str | Path | None,
    windows: Any = None,
) -> None:
    """RUN/config.json (the config plus what the run derived from its data) and RUN/thresholds.json."""
    from upper_fast import __version__

    values = config.to_dict()
    values["run"] = dict(  # what this run derived from its data (not settings: from_dict ignores them)
        term_vocab_size=config.term_vocab_size,
        text_vocab_size=text_vocab,
        n_countries=vocab.n_countries,
        n_categories=vocab.n_categories,
        n_quality=len(vocab.quality_columns),
        graph_dim=graph.dim,
        n_products=n_products,
        package_version=__version__,
        data_dir=str(Path(data_dir).resolve()) if data_dir is not None else None,
        windows=windows.to_dict() if windows is not None else None,  # the train window it learned from
    )
    (run / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True))
    theta = config.objective.thresholds
    names = ("negative", "click", "favorite", "add_to_cart", "purchase")
    (run / "thresholds.json").write_text(json.dumps(dict(zip(names, theta)), indent=1))


def teacher_vectors(
    model: UpperModel, data: TrainingSet, products: ProductTable, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distillation teacher (TrainConfig.objective.distill_weight): unit mean-pooled text-encoder vectors of
    the query rows that have token rows (data.query_text_ids) and of every product, and the (nq,)
    mask of query rows with a teacher."""
    if data.query_text_ids is None or data.query_text_mask is None:
        raise ValueError("distill_weight > 0 needs TrainingSet.query_text_ids / query_text_mask (train() fills them)")
    if config.experimental.distill_bm25 > 0 and (data.bm25_products is None or data.bm25_queries is None):
        raise ValueError("distill_bm25 > 0 needs TrainingSet.bm25_products / bm25_queries (train() fills them)")
    if len(data.query_text_ids) != len(data.queries.query_terms):
        raise ValueError("query_text_ids must have one row per query row of data.queries")
    dtype = frozen_encode_dtype(config.text.frozen_encode_dtype, device)
    q = pool_token_rows(model, data.query_text_ids, data.query_text_mask, device, config.text.text_cache_dir,
                        prefix="query_pooled", progress=config.loop.progress, dtype=dtype)
    p = products.text_pooled if products.text_pooled is not None else pooled_text_vectors(
        model, products, device, config.text.text_cache_dir, progress=config.loop.progress, dtype=dtype)
    unit = lambda x: torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), dim=-1).to(device)  # noqa: E731
    has = torch.from_numpy(data.query_text_mask.sum(1) > 0).to(device)
    return unit(q), has, unit(p)


def build_teacher(vectors: tuple[torch.Tensor, torch.Tensor, torch.Tensor], data: TrainingSet, config: TrainConfig) -> DistillTeacher:
    """The distillation term's teacher from `teacher_vectors` (and data's BM25 matrices when
    `config.experimental.distill_bm25` > 0)."""
    query, has, product = vectors
    return DistillTeacher(query, has, product, config.experimental.distill_bm25, data.bm25_products, data.bm25_queries)


def distill_token_rows(
    strings: list[str], tokenizer: Any, config: TrainConfig, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(nq, Lt) token ids / mask of the query strings that get a distillation teacher: the
    `config.objective.distill_queries` with the most training rows (`counts` (nq,); ties in a seeded random
    order; all when 0); the other rows are all padding."""
    from upper_fast_train.text import encode_texts

    n = len(strings)
    chosen = np.arange(n)
    if 0 < config.objective.distill_queries < n:
        tie = np.random.default_rng([config.loop.seed, 23]).random(n)
        rank = np.lexsort((tie, -(counts if counts is not None else np.zeros(n))))
        chosen = np.sort(rank[: config.objective.distill_queries])
    ids = np.zeros((n, config.text.text_max_len), np.int64)
    mask = np.zeros((n, config.text.text_max_len), np.int64)
    ids[chosen], mask[chosen] = encode_texts(tokenizer, [strings[i] for i in chosen], config.text.text_max_len)
    return ids, mask
