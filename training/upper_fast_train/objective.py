"""The training objective as composed loss terms: each term an object over one scored step that
delegates to a pure function of scores, labels and masks (losses.py), and `build_objective(config)`
choosing and weighing them.

A term has a `name` (its key in the loss history), a `__call__(step: ScoredStep) -> scalar | None`
(None: nothing to score this step, e.g. no shown products) and, for terms that need products beyond
the batch's own, the `source` of those columns (step.SOURCES). `Objective` sums weight x term over
its terms in order; a weight is a number or the name of a scheduled negative weight
(`negatives.negative_weights`: "uniform", "inbatch", "dynamic"), and a term whose weight is 0 this
step is neither computed nor logged. To add a term: write its pure function in losses.py, a small
class here that reads its inputs from the `ScoredStep`, and one line in `build_objective`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from upper_fast_train.config import TrainConfig
from upper_fast_train.losses import (hinge_loss, negative_hinge, personal_contrast, shown_pairwise_hinge, softmax_contrast,
                                     softmax_distill)
from upper_fast_train.negatives import hardest, own_positive_mask
from upper_fast_train.step import ScoredStep
from upper_fast_train.towers import unit_scale

__all__ = ["DistillTeacher", "InBatchNegatives", "LossTerm", "MultiPartHinge", "Objective", "PersonalContrast", "SampledNegatives",
           "ShownPairwiseHinge", "SoftmaxContrast", "SoftmaxDistillation", "Weighted", "build_objective"]


class LossTerm(Protocol):
    name: str
    source: str | None  # the product columns it needs beyond the batch's own (step.SOURCES), if any
    needs_group_sets: bool  # reads step.forbidden (each row's group positives among all columns)

    def __call__(self, step: ScoredStep) -> torch.Tensor | None: ...


class MultiPartHinge:
    """`losses.hinge_loss` of each row's own product: one cosine threshold per interaction type."""

    name, source, needs_group_sets = "hinge", None, False

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = thresholds

    def __call__(self, step: ScoredStep) -> torch.Tensor:
        return hinge_loss(step.positive_scores, step.labels, self.thresholds)  # (B,), (B,)


class PersonalContrast:
    """`losses.personal_contrast`: among the products engaged in the batch with the row's query, the
    ones the row's own query-user engaged with first. skip_only: scored by the user-affinity skip's
    U(user) . P(product) alone, the shared term table detached."""

    name, source, needs_group_sets = "personal", None, False

    def __init__(self, temperature: float, skip_only: bool = False) -> None:
        self.temperature = temperature
        self.skip_only = skip_only

    def __call__(self, step: ScoredStep) -> torch.Tensor:
        cols = step.columns
        pos_rows, labels = cols.product_rows, cols.labels
        same_query = torch.from_numpy(cols.query_rows)
        candidates = (own_positive_mask(pos_rows, same_query, labels) & (labels > 0)[:, None]).to(step.device)  # (B, B); logged negatives: no row
        targets = own_positive_mask(pos_rows, torch.from_numpy(cols.personal_groups), labels).to(step.device)  # (B, B)
        scores = step.batch_scores()  # (B, B)
        if self.skip_only and step.model.query_tower.user_skip is not None:
            scores = _skip_scores(step) * self.temperature  # unnormalised: divided by T in the loss, so T cancels
        return personal_contrast(scores, candidates, targets, self.temperature)


def _skip_scores(step: ScoredStep) -> torch.Tensor:
    """(B, B) U(user of row i) . P(product of row j) of the user-affinity skip alone."""
    from upper_fast_train.encode import to_device

    model, q_in = step.model, step.columns.query_inputs
    user_vec = model.query_tower.user_skip(q_in["hist_item_graph"], q_in["hist_item_type"], q_in["user_country"])  # (B, D)
    pin = to_device(step.products.take(step.columns.product_rows.numpy()), step.device)
    gm = pin["product_graph_mask"].unsqueeze(-1)
    with torch.no_grad():
        bag = unit_scale(model.terms(pin["product_terms"]))
    prod_vec = model.product_tower.user_skip(pin["product_graph"] * gm, bag, pin["shop_country"])  # (B, D)
    return user_vec @ prod_vec.T


class SoftmaxContrast:
    """`losses.softmax_contrast`: InfoNCE of each positive row over every product column of the step,
    the row's group positives and its own teacher-mined columns never its negatives. type_weights
    ([click, favorite, add_to_cart, purchase]): per-row weights by engagement type."""

    name, source, needs_group_sets = "contrast", None, True

    def __init__(self, temperature: float, type_weights: Sequence[float] = ()) -> None:
        self.temperature = temperature
        self.type_weights = list(type_weights)

    def __call__(self, step: ScoredStep) -> torch.Tensor:
        row_w = None
        if self.type_weights:
            table = torch.tensor([0.0, *self.type_weights], dtype=step.scores.dtype)
            row_w = table[step.columns.labels.clamp(0, 4)].to(step.device)  # (B,); label 0 (a logged negative) takes no part anyway
        forbidden = step.forbidden if step.own_lexical is None else step.forbidden | step.own_lexical  # (B, R)
        return softmax_contrast(step.scores, step.positive_columns, forbidden, self.temperature, step.labels > 0, row_w)


@dataclass
class DistillTeacher:
    """The distillation teacher's scores of a step's columns: unit text-encoder vectors of the query
    rows (nq, H) and of every product (n, H), the (nq,) bool rows that have one, and optionally
    BM25(query, title) added to the logits (bm25_weight x, from `lexical_teacher.bm25_matrices`)."""

    query: torch.Tensor  # (nq, H)
    has: torch.Tensor  # (nq,) bool
    product: torch.Tensor  # (n, H)
    bm25_weight: float = 0.0
    bm25_products: object | None = None
    bm25_queries: object | None = None

    def logits(self, query_rows: np.ndarray, columns: np.ndarray, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, R) teacher logits of each row's query against the catalog rows `columns` (R,), (B,)
        bool rows that have a teacher)."""
        device = self.query.device
        qrows = torch.from_numpy(query_rows).to(device)
        t_logits = self.query[qrows] @ self.product[torch.from_numpy(columns).to(device)].T / temperature  # (B, R)
        rows = self.has[qrows]
        if self.bm25_weight > 0:
            from upper_fast_train.lexical_teacher import bm25_scores

            bm = torch.from_numpy(bm25_scores(self.bm25_products, self.bm25_queries, query_rows, columns)).to(device)
            t_logits = t_logits * rows[:, None] + self.bm25_weight * bm
            rows = torch.ones_like(rows)
        return t_logits, rows


def without_history(query_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) bool: the rows whose query-tower inputs hold no history item and no history query."""
    items = query_inputs["hist_item_type"]  # (B, N) interaction codes, 0 = padding
    queries = query_inputs["hist_query_terms"]  # (B, M, Lq) term ids, 0 = padding
    return (items == 0).all(dim=1) & (queries.reshape(queries.shape[0], -1) == 0).all(dim=1)


class SoftmaxDistillation:
    """`losses.softmax_distill`: KL(teacher || student) over the step's columns, on the positive rows
    whose query has a teacher. mined_columns K > 0: each such row adds its query's K best BM25
    products as columns (source "lexical")."""

    name, needs_group_sets = "distill", True

    def __init__(self, teacher: DistillTeacher, temperature: float, teacher_temperature: float, mined_columns: int = 0,
                 rows: str = "all") -> None:
        self.teacher = teacher
        self.temperature = temperature  # the student's
        self.teacher_temperature = teacher_temperature  # divides the teacher's cosines before its softmax at T = 1
        self.source = "lexical" if mined_columns > 0 else None
        self.rows = rows  # config.objective.distill_rows: "all", "without_history" or "blanked"

    def __call__(self, step: ScoredStep) -> torch.Tensor:
        t_logits, rows = self.teacher.logits(step.columns.query_rows, step.columns.unique, self.teacher_temperature)  # (B, R), (B,)
        rows = rows & (step.labels > 0)
        scores = step.scores
        if self.rows == "without_history":
            rows = rows & without_history(step.columns.query_inputs).to(rows.device)
        elif self.rows == "blanked":
            scores = blanked_query_scores(step)
        return softmax_distill(scores, t_logits, step.positive_columns, step.forbidden, self.temperature, 1.0, rows)


def blanked_query_scores(step: ScoredStep) -> torch.Tensor:
    """(B, R) scores of the step's product columns against each row's query vector with its user
    inputs blanked (`towers.blank_user_inputs`, the non-personalised ablation's blanking), with
    gradient, beside the step's personalised forward. `QueryUserTower.forward_blanked` computes it
    without the per-row history encoder: blanked, every row's user part is one vector."""
    if step.product_vectors is None:
        raise ValueError("the step has no product vectors (score_step keeps them)")
    q_in = step.columns.query_inputs
    q_blank = step.model.query_tower.forward_blanked(q_in["query_terms"], q_in["query_graph"], q_in["query_graph_mask"])
    return q_blank @ step.product_vectors.T


class InBatchNegatives:
    """`losses.negative_hinge` of each row's k hardest other-row products (never its group's positives)."""

    name, source, needs_group_sets = "inbatch", None, False

    def __init__(self, k: int, theta_neg: float) -> None:
        self.k = k
        self.theta_neg = theta_neg

    def __call__(self, step: ScoredStep) -> torch.Tensor:
        s, valid = hardest(step.batch_scores(), step.columns.excluded.to(step.device), self.k)  # (B, k) each
        return negative_hinge(s, valid, self.theta_neg)


class SampledNegatives:
    """`losses.negative_hinge` of one sampled source's products: "uniform" (drawn for the whole
    batch) or "dynamic" (mined per row from the pool); never a row's group positives."""

    needs_group_sets = False

    def __init__(self, source: str, theta_neg: float) -> None:
        if source not in ("uniform", "dynamic"):
            raise ValueError(f'source must be "uniform" or "dynamic", got {source!r}')
        self.name = self.source = source
        self.theta_neg = theta_neg

    def __call__(self, step: ScoredStep) -> torch.Tensor | None:
        sampled = step.source_scores(self.source)  # (B, K) scores and valid
        return None if sampled is None else negative_hinge(*sampled, self.theta_neg)


class ShownPairwiseHinge:
    """`losses.shown_pairwise_hinge`: each row's engaged product above what its own search showed."""

    name, source, needs_group_sets = "shown", "shown", False

    def __init__(self, margin: float) -> None:
        self.margin = margin

    def __call__(self, step: ScoredStep) -> torch.Tensor | None:
        shown = step.source_scores("shown")  # (B, K) scores and valid
        return None if shown is None else shown_pairwise_hinge(step.positive_scores, *shown, self.margin)


@dataclass
class Weighted:
    """One term of an objective and its weight: a number, or the name of a scheduled weight."""

    term: LossTerm
    weight: float | str

    def weight_at(self, schedule: Mapping[str, float]) -> float:
        return schedule[self.weight] if isinstance(self.weight, str) else self.weight


class Objective:
    """sum_i weight_i x term_i(step), in order; returns the total and each computed term's value."""

    def __init__(self, terms: Sequence[Weighted]) -> None:
        if not terms:
            raise ValueError("an objective needs at least one term")
        names = [w.term.name for w in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"term names must be unique (they key the loss history), got {names}")
        self.terms = list(terms)

    def active(self, schedule: Mapping[str, float]) -> list[Weighted]:
        """The terms whose weight is not 0 at this step's `schedule`."""
        return [w for w in self.terms if w.weight_at(schedule) != 0]

    def sources(self, schedule: Mapping[str, float]) -> set[str]:
        """The column sources the active terms read."""
        return {w.term.source for w in self.active(schedule) if w.term.source is not None}

    def needs_group_sets(self, schedule: Mapping[str, float]) -> bool:
        return any(w.term.needs_group_sets for w in self.active(schedule))

    def __call__(self, step: ScoredStep, schedule: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        for entry in self.active(schedule):
            value = entry.term(step)
            if value is None:
                continue
            weighted = value if total is None and entry.weight == 1.0 else entry.weight_at(schedule) * value
            total = weighted if total is None else total + weighted
            parts[entry.term.name] = float(value.detach())
        if total is None:
            raise ValueError("no term of the objective had anything to score this step")
        return total, parts


def build_objective(config: TrainConfig, teacher: DistillTeacher | None = None) -> Objective:
    """The objective `config.objective` (and the negative sources of `config.negatives`) describe, in
    the order the terms are summed: hinge, personal contrast, softmax contrast, distillation (when a
    `teacher` is given: `train_model` builds one whenever distill_weight > 0), in-batch, uniform and
    mined negatives at their scheduled weights, shown negatives."""
    obj, neg, exp = config.objective, config.negatives, config.experimental
    theta_neg = obj.thresholds[0]
    terms = [Weighted(MultiPartHinge(obj.thresholds), 1.0)]
    if obj.personal_contrast > 0:
        terms.append(Weighted(PersonalContrast(obj.personal_temperature, obj.personal_contrast_skip_only), obj.personal_contrast))
    if obj.contrast_weight > 0:
        terms.append(Weighted(SoftmaxContrast(obj.contrast_temperature, exp.contrast_type_weights), obj.contrast_weight))
    if teacher is not None and obj.distill_weight > 0:
        distill = SoftmaxDistillation(teacher, obj.contrast_temperature, obj.distill_temperature, exp.distill_bm25_negatives,
                                      obj.distill_rows)
        terms.append(Weighted(distill, obj.distill_weight))
    if neg.inbatch_negatives > 0:
        terms.append(Weighted(InBatchNegatives(neg.inbatch_negatives, theta_neg), "inbatch"))
    if neg.uniform_negatives > 0:
        terms.append(Weighted(SampledNegatives("uniform", theta_neg), "uniform"))
    if neg.dynamic_negatives > 0:
        terms.append(Weighted(SampledNegatives("dynamic", theta_neg), "dynamic"))
    if obj.shown_negatives > 0 and obj.shown_weight > 0:
        terms.append(Weighted(ShownPairwiseHinge(obj.shown_margin), obj.shown_weight))
    return Objective(terms)
