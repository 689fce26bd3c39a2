"""Title pseudo-queries: signed-out training examples made from the catalogue's own titles.

A search log's queries use a small part of the term table; a query never seen in training is made of
words whose rows those queries never trained. Per product, `ExamplesConfig.pseudo_queries` random
contiguous spans of its title's words become "click" examples of that product (catalogue text only,
no evaluation data), so every title word's row is trained and the teacher's distillation reaches
them. They are training examples only: the graph, the tokenizer and the evaluation never see them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from upper_fast_train.config import TrainConfig

__all__ = ["pseudo_queries", "with_pseudo_queries"]

_WORD = re.compile(r"[\w/.\-\"']+")


def pseudo_queries(titles: list[str | None], per_product: int, min_words: int, max_words: int,
                   seed: int = 0) -> tuple[list[str], list[int]]:
    """(queries, catalogue rows): per title, `per_product` random contiguous spans of its lower-cased
    words, each min_words..max_words long (shorter titles give the whole title)."""
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    rng = np.random.default_rng(seed)
    queries: list[str] = []
    rows: list[int] = []
    for row, title in enumerate(titles):
        words = _WORD.findall((title or "").lower())
        if not words:
            continue
        for _ in range(per_product):
            n = min(int(rng.integers(min_words, max_words + 1)), len(words))
            start = int(rng.integers(0, len(words) - n + 1))
            queries.append(" ".join(words[start : start + n]))
            rows.append(row)
    return queries, rows


def with_pseudo_queries(dataset: Any, config: TrainConfig) -> Any:
    """`dataset` with its pseudo-query events appended to the log (timestamp train_end - 1, signed
    out, interaction click); `dataset` itself when `config.examples.pseudo_queries` is 0."""
    import pyarrow as pa

    ex = config.examples
    if ex.pseudo_queries == 0:
        return dataset
    queries, rows = pseudo_queries(dataset.catalog.column("title").to_pylist(), ex.pseudo_queries,
                                   ex.pseudo_query_min_words, ex.pseudo_query_max_words, config.loop.seed)
    ids = dataset.catalog.column("product_id").to_pylist()
    n = len(queries)
    extra = pa.table({
        "timestamp": pa.array([int(dataset.meta["train_end"]) - 1] * n, pa.int64()),
        "user_id": pa.array([None] * n, pa.string()),
        "query": pa.array(queries, pa.string()),
        "product_id": pa.array([ids[r] for r in rows], pa.string()),
        "interaction": pa.array(["click"] * n, pa.string()),
        "country": pa.array([None] * n, pa.string()),
    })
    log = pa.concat_tables([dataset.log, extra.select(dataset.log.column_names).cast(dataset.log.schema)])
    return dataclasses.replace(dataset, log=log)
