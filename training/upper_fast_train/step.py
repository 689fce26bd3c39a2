"""One training step's batch: its example rows, every product column the loss terms score (the rows'
own products, uniform, mined, shown and teacher-mined ones) gathered for one forward, and the scores.

Column sources, in the order their products enter the step (`SOURCES`): "positive" (each row's own
product, (B,)), "uniform" (shared by the batch, (U,)), then the per-row sources "dynamic" (mined from
the pool), "shown" (what the row's search showed) and "lexical" (the teacher's BM25 products), each
(B, K) catalog rows with -1 for none. A product in several sources is one column of the forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from upper_fast_train.config import TrainConfig
from upper_fast_train.encode import to_device
from upper_fast_train.features import ProductTable, TrainingSet
from upper_fast_train.negatives import excluded_products, membership, own_positive_mask, sample_uniform

__all__ = ["SOURCES", "ScoredStep", "StepColumns", "gather_step", "lexical_columns", "negative_groups", "row_products", "score_step"]

SOURCES = ("positive", "uniform", "dynamic", "shown", "lexical")


def negative_groups(data: TrainingSet, idx: np.ndarray, config: TrainConfig) -> np.ndarray:
    """(B,) int64 group keys of the batch rows `idx`: rows of one group share their positives, so no
    negative of a row is a product its group engaged with in the batch. The group is the query row
    (`config.negatives.exclude_query_positives`, the default) or the query-user."""
    return data.queries.event_query[idx] if config.negatives.exclude_query_positives else data.groups[idx]


def lexical_columns(data: TrainingSet, idx: np.ndarray, has_teacher: np.ndarray, excluded_sets: np.ndarray,
                    config: TrainConfig) -> np.ndarray:
    """(B, K) int64 teacher-mined catalog rows per batch row (TrainConfig.experimental.distill_bm25_negatives; -1 =
    none): the row's query's `data.bm25_top`, kept only for rows that take part in the distillation
    (positive rows whose query has an encoder teacher vector, `has_teacher` (nq,) bool, or any
    positive row when the teacher has BM25 in it) and without the row's own group positives
    (`excluded_sets`, `negatives.excluded_products`), which are columns already."""
    if data.bm25_top is None:
        raise ValueError("distill_bm25_negatives > 0 needs TrainingSet.bm25_top (train() fills it)")
    qrows = data.queries.event_query[idx]
    lexical = data.bm25_top[qrows].copy()
    takes_part = data.labels[idx] > 0
    if config.experimental.distill_bm25 == 0:
        takes_part &= np.asarray(has_teacher, dtype=bool)[qrows]
    lexical[~takes_part] = -1
    lexical[membership(lexical, excluded_sets)] = -1
    return lexical


def row_products(scores: torch.Tensor, rows: np.ndarray, columns: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of per-row products (rows (B, K) catalog rows, -1 = none) given their step columns in
    order (`columns`: the columns of rows[rows >= 0]): ((B, K) scores, (B, K) valid)."""
    ok = rows >= 0
    cols = np.zeros(rows.shape, dtype=np.int64)
    cols[ok] = columns
    return scores.gather(1, torch.from_numpy(cols).to(scores.device)), torch.from_numpy(ok).to(scores.device)


def _blank_graph(inputs: dict[str, np.ndarray], name: str, drop: np.ndarray) -> None:
    """Graph dropout: zero inputs[name] (B, G) and inputs[name + "_mask"] (B,) on the rows where drop."""
    inputs[name] = np.where(drop[:, None], np.float32(0), inputs[name]).astype(np.float32)
    inputs[name + "_mask"] = np.where(drop, np.float32(0), inputs[name + "_mask"]).astype(np.float32)


@dataclass
class StepColumns:
    """A step's rows and product columns, ready for one forward (tensors on the step's device unless
    said otherwise)."""

    query_inputs: dict[str, torch.Tensor]  # the query tower's keyword inputs, (B, ...) each
    product_inputs: dict[str, torch.Tensor]  # the product tower's keyword inputs of the R columns
    product_rows: torch.Tensor  # (B,) int64 catalog row of each row's product, cpu
    labels: torch.Tensor  # (B,) int64 0..4, cpu
    query_rows: np.ndarray  # (B,) int64 query row of each example
    personal_groups: np.ndarray  # (B,) int64 query-user of each example (each signed-out row its own)
    excluded: torch.Tensor  # (B, B) bool, cpu: column j's product is a positive of row i's group
    excluded_sets: np.ndarray | None  # (B, E) int64 catalog rows no negative of row i may be, -1 padded
    unique: np.ndarray  # (R,) int64 catalog rows of the columns, sorted
    inverse: np.ndarray  # (B + U + products of the per-row sources,) int64 column of each source entry
    uniform_rows: np.ndarray  # (U,) int64
    per_row: dict[str, np.ndarray] = field(default_factory=dict)  # "dynamic"/"shown"/"lexical" -> (B, K), -1 = none
    # (B, D) the rows' query vectors when the miner already ran the query forward with grad (score_step
    # then runs the product tower alone); None: score_step runs both towers
    query_vectors: torch.Tensor | None = None

    def source_columns(self, source: str) -> np.ndarray:
        """The step columns of one source's products, in `SOURCES` order within `inverse`."""
        sizes = {"positive": len(self.labels), "uniform": len(self.uniform_rows)}
        sizes.update({name: int((rows >= 0).sum()) for name, rows in self.per_row.items()})
        start = 0
        for name in SOURCES:
            if name == source:
                return self.inverse[start : start + sizes.get(name, 0)]
            start += sizes.get(name, 0)
        raise KeyError(f"unknown column source {source!r}; one of {SOURCES}")


def gather_step(
    data: TrainingSet, products: ProductTable, idx: np.ndarray, step: int, config: TrainConfig, device: torch.device,
    timing: dict[str, float], *, uniform: bool, group_sets: bool, shown: bool,
    mine: Callable[[dict[str, torch.Tensor], np.ndarray | None], np.ndarray] | None = None,
    teacher_rows: np.ndarray | None = None,
) -> StepColumns:
    """The step's columns for the batch rows `idx` (B,), with graph dropout seeded by the step.

    uniform: draw `negatives.uniform_negatives` shared products (seeded by the step); group_sets:
    compute each row's excluded catalog rows (`excluded_sets`); shown: take `data.shown_rows` (when
    the data has them); mine(query inputs, excluded_sets) -> (B, K) mined rows, when given;
    teacher_rows (nq,) bool, when given: add each distilled row's BM25 products (`lexical_columns`).
    Adds its seconds to timing["data"], ["mining"] and ["forward"] (what follows the mining)."""
    t0 = time.perf_counter()
    personalized: bool | np.ndarray = config.model.personalized
    if personalized and config.experimental.user_dropout > 0:  # user-feature dropout, seeded by step
        personalized = np.random.default_rng([config.loop.seed, step, 29]).random(len(idx)) >= config.experimental.user_dropout
    q_np = data.queries.take(idx, products.product_graph, personalized, products.history_vectors)
    drop_rng = np.random.default_rng([config.loop.seed, step, 17])  # graph dropout draws, seeded by step
    if config.graph.query_graph_dropout > 0:
        _blank_graph(q_np, "query_graph", drop_rng.random(len(idx)) < config.graph.query_graph_dropout)
    q_in = to_device(q_np, device)
    pos_rows = torch.from_numpy(data.product_rows[idx])
    labels = torch.from_numpy(data.labels[idx])
    groups = torch.from_numpy(negative_groups(data, idx, config))
    excluded = own_positive_mask(pos_rows, groups, labels)  # (B, B)
    need_sets = group_sets or uniform or mine is not None or teacher_rows is not None
    excluded_sets = excluded_products(pos_rows, groups, labels) if need_sets else None
    gen = torch.Generator().manual_seed(config.loop.seed * 1_000_003 + step)
    uni_rows = sample_uniform(len(products), config.negatives.uniform_negatives, gen) if uniform else torch.zeros(0, dtype=torch.int64)
    t1 = time.perf_counter()
    timing["data"] += t1 - t0

    per_row: dict[str, np.ndarray] = {}
    if mine is not None:
        per_row["dynamic"] = mine(q_in, excluded_sets)
    t2 = time.perf_counter()
    timing["mining"] += t2 - t1

    if shown and data.shown_rows is not None:
        rows = data.shown_rows[idx].copy()  # (B, K) catalog rows, -1 = none
        rows[rows == pos_rows.numpy()[:, None]] = -1  # a product the row itself engaged with
        per_row["shown"] = rows
    if teacher_rows is not None:
        assert excluded_sets is not None
        per_row["lexical"] = lexical_columns(data, idx, teacher_rows, excluded_sets, config)
    ordered = [per_row[name] for name in SOURCES if name in per_row]
    all_rows = np.concatenate([pos_rows.numpy(), uni_rows.numpy(), *[rows[rows >= 0] for rows in ordered]])
    unique, inverse = np.unique(all_rows, return_inverse=True)
    p_np = products.take(unique)
    if config.graph.product_graph_dropout > 0:
        _blank_graph(p_np, "product_graph", drop_rng.random(len(unique)) < config.graph.product_graph_dropout)
    personal = data.personal_groups if data.personal_groups is not None else data.groups
    timing["forward"] += time.perf_counter() - t2
    return StepColumns(
        query_inputs=q_in, product_inputs=to_device(p_np, device), product_rows=pos_rows, labels=labels,
        query_rows=data.queries.event_query[idx], personal_groups=personal[idx], excluded=excluded,
        excluded_sets=excluded_sets, unique=unique, inverse=inverse, uniform_rows=uni_rows.numpy(), per_row=per_row,
    )


class ScoredStep:
    """A step after its forward: the (B, R) scores of every row against every product column, and
    what the loss terms read besides (`model`: the unwrapped model, for terms that score one part of it)."""

    def __init__(self, columns: StepColumns, scores: torch.Tensor, model: torch.nn.Module, products: ProductTable,
                 product_vectors: torch.Tensor | None = None) -> None:
        self.columns = columns
        self.model = model
        self.products = products
        self.scores = scores  # (B, R)
        self.product_vectors = product_vectors  # (R, D) the columns' vectors, for terms that score another query vector
        self.device = scores.device
        b = len(columns.labels)
        self.positive_columns = torch.from_numpy(columns.inverse[:b]).to(self.device)  # (B,)
        self.positive_scores = scores[torch.arange(b, device=self.device), self.positive_columns]  # (B,)
        self.labels = columns.labels.to(self.device)  # (B,)

    @property
    def batch_size(self) -> int:
        return len(self.columns.labels)

    def batch_scores(self) -> torch.Tensor:
        """(B, B): row i's score of row j's product."""
        return self.scores[:, self.positive_columns]

    def source_scores(self, source: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """((B, K) scores, (B, K) valid) of one sampled source's products, or None when the step has
        none of it. "uniform": the batch's shared products (K = U), valid where not one of the row's
        group positives; "dynamic", "shown", "lexical": each row's own (valid = not padding)."""
        if source == "uniform":
            if not len(self.columns.uniform_rows):
                return None
            cols = torch.from_numpy(self.columns.source_columns("uniform")).to(self.device)
            assert self.columns.excluded_sets is not None
            valid = torch.from_numpy(~membership(self.columns.uniform_rows, self.columns.excluded_sets)).to(self.device)
            return self.scores[:, cols], valid
        rows = self.columns.per_row.get(source)
        if rows is None or rows.shape[1] == 0:
            return None
        return row_products(self.scores, rows, self.columns.source_columns(source))

    @cached_property
    def forbidden(self) -> torch.Tensor:
        """(B, R) bool: columns that are positives of the row's group (never negatives)."""
        assert self.columns.excluded_sets is not None, "gather_step(group_sets=True) for the softmax terms"
        return torch.from_numpy(membership(self.columns.unique, self.columns.excluded_sets)).to(self.device)

    @cached_property
    def own_lexical(self) -> torch.Tensor | None:
        """(B, R) bool: each row's own teacher-mined columns (unjudged matches), or None when none."""
        lexical = self.columns.per_row.get("lexical")
        if lexical is None or not lexical.size or not bool((lexical >= 0).any()):
            return None
        return torch.from_numpy(membership(self.columns.unique, lexical)).to(self.device)  # -1 pads match nothing


def score_step(model: torch.nn.Module, columns: StepColumns, products: ProductTable) -> ScoredStep:
    """The step's one forward (both towers in one call, for DDP; the product tower alone when the
    query vectors are in `columns`) and its scores."""
    core = model.module if hasattr(model, "module") else model
    if columns.query_vectors is not None:
        q, p = columns.query_vectors, core.product_tower(**columns.product_inputs)  # (B, D), (R, D)
    else:
        q, p = model(columns.query_inputs, columns.product_inputs)  # (B, D), (R, D)
    return ScoredStep(columns, q @ p.T, core, products, p)
