"""Multi-part hinge loss (UPPER, arXiv 2306.04833): one cosine threshold per interaction type.

A positive of type t (1 click .. 4 purchase) costs max(0, theta_t - s); a negative (label 0) costs
max(0, s - theta_neg). Ordered thresholds make a purchase want a higher score than a click, and the
same thresholds prune results at serving time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["hinge_loss", "negative_hinge", "personal_contrast", "shown_pairwise_hinge", "softmax_contrast", "softmax_distill"]


def _threshold_tensor(thresholds: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(thresholds, dtype=like.dtype, device=like.device)
    if t.shape != (5,):
        raise ValueError(f"thresholds must have shape (5,) [neg, click, fav, cart, purchase], got {tuple(t.shape)}")
    return t


def hinge_loss(
    scores: torch.Tensor, labels: torch.Tensor, thresholds: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Mean multi-part hinge over rows.

    scores:     (n,) float similarities.
    labels:     (n,) int64 in 0..4 (0 = negative, 1 click, 2 favorite, 3 add_to_cart, 4 purchase).
    thresholds: (5,) [theta_neg, theta_click, theta_fav, theta_cart, theta_purchase].
    Returns a scalar: mean_i cost_i (0 for an empty batch), the same reduction as the core's
    `HingeThresholds.hinge_loss`.
    """
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be (n,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}: call labels.long()")
    if scores.numel() == 0:
        return scores.sum()
    if int(labels.min()) < 0 or int(labels.max()) > 4:
        raise ValueError("labels must be in 0..4")
    theta = _threshold_tensor(thresholds, scores)[labels]  # (n,)
    positive = labels > 0
    cost = torch.where(positive, torch.relu(theta - scores), torch.relu(scores - theta))
    return cost.mean()


def negative_hinge(scores: torch.Tensor, valid: torch.Tensor, theta_neg: float) -> torch.Tensor:
    """Mean of max(0, s - theta_neg) over the valid entries of a negatives score matrix.

    scores: (B, k) float; valid: (B, k) bool (False where a candidate is a row's own positive or padding).
    Returns a scalar (0 when nothing is valid).
    """
    if valid.shape != scores.shape or valid.dtype != torch.bool:
        raise ValueError("valid must be a bool tensor of the same shape as scores")
    cost = torch.relu(scores - theta_neg) * valid
    return cost.sum() / valid.sum().clamp_min(1)


def personal_contrast(scores: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Within-query, across-user softmax: -log(sum_targets e^{s/T} / sum_candidates e^{s/T}) per row,
    averaged over the rows that have a candidate outside their targets.

    scores (B, C) float: row i's score of column j's product; candidates (B, C) bool: the products
    engaged in the batch with row i's query (by anyone); targets (B, C) bool, a subset of candidates
    holding row i's own product: the products row i's query-user engaged with. The hinge loss and the
    negatives never order one query's relevant products for one user against another user's (those
    are excluded as negatives); this term does, and it is relative only (no absolute threshold).
    Returns a scalar (0 when no row has such a candidate).
    """
    if not (scores.shape == candidates.shape == targets.shape) or candidates.dtype != torch.bool or targets.dtype != torch.bool:
        raise ValueError("scores, candidates and targets must have one shape; candidates and targets bool")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    targets = targets & candidates
    rows = (candidates & ~targets).any(1) & targets.any(1)
    if not bool(rows.any()):
        return scores.sum() * 0.0
    logits = scores[rows] / temperature
    neg_inf = torch.finfo(logits.dtype).min
    all_ = torch.logsumexp(logits.masked_fill(~candidates[rows], neg_inf), dim=1)
    own = torch.logsumexp(logits.masked_fill(~targets[rows], neg_inf), dim=1)
    return (all_ - own).mean()


def shown_pairwise_hinge(pos_scores: torch.Tensor, shown_scores: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over valid pairs of max(0, margin - (s_pos - s_shown)): each row's engaged product above
    the products its own search showed and its searcher passed over (`TrainConfig.objective.shown_negatives`).

    pos_scores (B,); shown_scores (B, K); valid (B, K) bool (False = padding). A relative term: no
    absolute threshold, so it never pushes a query's shown (mostly relevant) products below theta_neg.
    Returns a scalar (0 when no pair is valid)."""
    if shown_scores.shape != valid.shape or shown_scores.dim() != 2 or pos_scores.shape != shown_scores.shape[:1]:
        raise ValueError(f"pos_scores (B,), shown_scores and valid (B, K) expected, got {tuple(pos_scores.shape)}, "
                         f"{tuple(shown_scores.shape)}, {tuple(valid.shape)}")
    if valid.dtype != torch.bool:
        raise ValueError("valid must be a bool tensor")
    if not bool(valid.any()):
        return shown_scores.sum() * 0.0
    gap = torch.clamp(margin - (pos_scores[:, None] - shown_scores), min=0.0)
    return gap[valid].mean()


def _rows_and_dropped(scores: torch.Tensor, target: torch.Tensor, forbidden: torch.Tensor,
                      rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (B,) bool, default all; dropped (B, C) bool: the forbidden columns minus each row's own
    target column, which is always kept) for the softmax terms."""
    b = scores.shape[0]
    if rows is None:
        rows = torch.ones(b, dtype=torch.bool, device=scores.device)
    keep_target = torch.zeros_like(forbidden)
    keep_target[torch.arange(b, device=scores.device), target] = True
    return rows, forbidden & ~keep_target


def softmax_contrast(
    scores: torch.Tensor, target: torch.Tensor, forbidden: torch.Tensor, temperature: float, rows: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over a step's candidate products: -log softmax(s / T)[target] per row, the other
    candidates (every product column of the step that is not `forbidden` for the row) as negatives,
    averaged over `rows`.

    scores (B, C) float; target (B,) int64 column of each row's own positive; forbidden (B, C) bool:
    columns that are positives of the row's group (never negatives; the target column itself is
    always kept); rows (B,) bool: rows that take part (default all); weights (B,) float >= 0: per-row
    weights of the mean (default equal; TrainConfig.experimental.contrast_type_weights). Returns a scalar (0 when
    no row). Unlike the hinge terms it never saturates: a positive keeps being pulled above its negatives.
    """
    if scores.dim() != 2 or forbidden.shape != scores.shape or forbidden.dtype != torch.bool:
        raise ValueError("scores must be (B, C) and forbidden a bool tensor of the same shape")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    rows, drop = _rows_and_dropped(scores, target, forbidden, rows)
    if not bool(rows.any()):
        return scores.sum() * 0.0
    logits = (scores / temperature).masked_fill(drop, torch.finfo(scores.dtype).min)
    if weights is None:
        return torch.nn.functional.cross_entropy(logits[rows], target[rows])
    if weights.shape != target.shape:
        raise ValueError(f"weights must be one per row, shape {tuple(target.shape)}, got {tuple(weights.shape)}")
    w = weights[rows].to(scores.dtype)
    total = w.sum()
    if not bool(total > 0):
        return scores.sum() * 0.0
    ce = torch.nn.functional.cross_entropy(logits[rows], target[rows], reduction="none")
    return (w * ce).sum() / total


def softmax_distill(
    scores: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    forbidden: torch.Tensor,
    temperature: float,
    teacher_temperature: float,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) of two softmaxes over a step's candidate products, averaged over `rows`.

    scores (B, C) the student's cosines; teacher (B, C) a teacher's cosines of the same pairs (e.g.
    an off-the-shelf sentence encoder's query vs title); both softmaxes at their own temperature over
    the columns that are not `forbidden` for the row (the target column (B,) always kept, as in
    `softmax_contrast`). Returns a scalar (0 when no row takes part).
    """
    if not (scores.shape == teacher.shape == forbidden.shape) or scores.dim() != 2 or forbidden.dtype != torch.bool:
        raise ValueError("scores, teacher and forbidden must share one (B, C) shape; forbidden bool")
    if temperature <= 0 or teacher_temperature <= 0:
        raise ValueError("temperatures must be > 0")
    rows, drop = _rows_and_dropped(scores, target, forbidden, rows)
    if not bool(rows.any()):
        return scores.sum() * 0.0
    drop = drop[rows]
    neg = torch.finfo(scores.dtype).min
    log_s = torch.log_softmax((scores[rows] / temperature).masked_fill(drop, neg), dim=1)
    log_t = torch.log_softmax((teacher[rows].to(scores.dtype) / teacher_temperature).masked_fill(drop, neg), dim=1)
    p_t = log_t.exp()
    return (p_t * (log_t - log_s)).masked_fill(drop, 0.0).sum(1).mean()
