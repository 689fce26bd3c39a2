"""Hybrid retrieval offline: fit the fusion of the dense and lexical channels, and evaluate dense only,
lexical only and fused per query-length bucket and per segment (docs/serving.md "Hybrid retrieval").

Everything runs through a loaded bundle's `Retriever.fusion_candidates`, the exact candidates and
features the served search ranks, so what is fitted and measured here is what is served.

- Log data: the fusion is fitted at export on the events export already tunes boosting on (the
  validation window's engagements, handed over by `export_bundle`): the first half in time fits, the
  second half decides between the learned weights and RRF (`export_fusion`).
- Judged data: fitted on the judged train split, evaluated on dev (benchmarks/hybrid_homedepot.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast.lexical import FUSION_FEATURES, FusionModel, fit_logistic

__all__ = ["LENGTH_BUCKETS", "SYSTEMS", "channels_table", "collect_candidates", "export_fusion", "fit_fusion",
           "hybrid_eval_bundle", "hybrid_eval_judged", "hybrid_eval_requests", "length_bucket", "rank_candidates"]

LENGTH_BUCKETS = ("1", "2", "3", "4-5", "6+")
SYSTEMS = ("dense", "lexical", "rrf", "learned")
Candidates = list[tuple[np.ndarray, np.ndarray]]


def length_bucket(query: str) -> str:
    """The query-length bucket of a query by its whitespace-separated words: 1, 2, 3, 4-5, 6+."""
    n = len(query.split())
    return "1" if n <= 1 else "2" if n == 2 else "3" if n == 3 else "4-5" if n <= 5 else "6+"


def collect_candidates(retriever: Any, queries: Sequence[str], users: Sequence[Any] | None = None, k: int = 100,
                       lexical_k: int | None = None, progress: bool = False) -> Candidates:
    """`Retriever.fusion_candidates` of every (query, user): a list of (rows (m,), features (m, F))."""
    from tqdm.auto import tqdm

    users = [None] * len(queries) if users is None else users
    return [retriever.fusion_candidates(q, u, k=k, lexical_k=lexical_k)
            for q, u in tqdm(list(zip(queries, users)), desc="fusion candidates", disable=not progress)]


def rank_candidates(candidates: Candidates, system: str, k: int, fusion: FusionModel | None = None) -> np.ndarray:
    """(len(candidates), k) int64 rows ranked by one system, -1 padded.

    system: "dense" (the dense channel's own list), "lexical" (the lexical channel's BM25 order), "rrf",
    or "learned" (`fusion`, a learned FusionModel).
    """
    out = np.full((len(candidates), k), -1, np.int64)
    rrf = FusionModel()
    for i, (rows, x) in enumerate(candidates):
        if system == "dense":
            order = np.flatnonzero(x[:, 2] > 0)  # dense hits come first, in their order
        elif system == "lexical":
            hit = np.flatnonzero(x[:, 3] > 0)
            order = hit[np.argsort(-x[hit, 3], kind="stable")]
        elif system == "rrf":
            order = np.argsort(-rrf.scores(x), kind="stable")
        elif system == "learned":
            if fusion is None:
                raise ValueError("system 'learned' needs a fusion model")
            order = np.argsort(-fusion.scores(x), kind="stable")
        else:
            raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")
        order = order[:k]
        out[i, : order.size] = rows[order]
    return out


def fit_fusion(candidates: Candidates, labels: Sequence[np.ndarray | dict[int, float]], l2: float = 1e-3,
               lexical_k: int = 100, report: dict[str, Any] | None = None) -> FusionModel:
    """A learned FusionModel: logistic regression of each candidate's label on its FUSION_FEATURES.

    labels[i]: the relevant rows of query i (label 1), or {row: label in [0, 1]} (graded; e.g.
    gain / max gain), unlisted candidates 0. Queries none of whose candidates is relevant carry no
    ranking information and are left out.
    """
    xs, ys = [], []
    for (rows, x), lab in zip(candidates, labels):
        if isinstance(lab, dict):
            y = np.fromiter((lab.get(int(r), 0.0) for r in rows), np.float64, count=rows.size)
        else:
            y = np.isin(rows, np.asarray(lab, dtype=np.int64)).astype(np.float64)
        if y.max(initial=0.0) <= 0:
            continue
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("no query has a relevant product among its candidates: nothing to fit the fusion on")
    w, b = fit_logistic(np.concatenate(xs), np.concatenate(ys), l2=l2)
    info = {"fitted_queries": len(xs), "candidates": int(sum(len(y) for y in ys)), "l2": l2, "intercept": b}
    info.update(report or {})
    return FusionModel(method="learned", weights=tuple(float(v) for v in w), lexical_k=lexical_k, report=info)


def _recall(retrieved: np.ndarray, relevant: Sequence[np.ndarray]) -> float:
    hits = [np.isin(r, rel).sum() / len(rel) for r, rel in zip(retrieved, relevant) if len(rel)]
    return float(np.mean(hits)) if hits else float("nan")


def export_fusion(later: Any, targets: np.ndarray, target_kind: str, k: int = 100, lexical_k: int = 100,
                  min_events: int = 40, progress: bool = False) -> Callable[[Path], FusionModel]:
    """The fusion fitter `export_bundle` hands to `write_bundle(fusion=...)`.

    later / targets: the engagements export tunes boosting on (pyarrow table with query, user_id; in
    time order) and their product rows. The returned callable loads the staged
    bundle, fits the learned fusion on the first half of the events and keeps it when its held-out
    recall@k on the second half is at least RRF's; otherwise, or with fewer than `min_events`
    events, RRF. The choice and both figures go into the fusion's report.
    """
    queries = [q or "" for q in later.column("query").to_pylist()] if later.num_rows else []
    users = [None if u is None else str(u) for u in later.column("user_id").to_pylist()] if later.num_rows else []
    targets = np.asarray(targets, dtype=np.int64)

    def fit(staged: Path) -> FusionModel:
        from upper_fast import Retriever

        n = len(queries)
        base = {"data": "the boosting events (engagements after training)", "target": target_kind, "events": n, "k": k}
        if n < min_events:
            return FusionModel(lexical_k=lexical_k, report={**base, "chosen": "rrf",
                                                            "reason": f"fewer than {min_events} events to fit on"})
        retriever = Retriever.load(staged, verify=False)
        cands = collect_candidates(retriever, queries, users, k=k, lexical_k=lexical_k, progress=progress)
        half = n // 2
        rel = [targets[i: i + 1] for i in range(n)]
        learned = fit_fusion(cands[:half], rel[:half], lexical_k=lexical_k)
        held = {s: _recall(rank_candidates(cands[half:], s, k, learned), rel[half:]) for s in SYSTEMS}
        report = {**base, "fit_events": half, "heldout_events": n - half,
                  **{f"heldout_recall@{k}/{s}": v for s, v in held.items()}}
        if held["learned"] >= held["rrf"]:
            return FusionModel(method="learned", weights=learned.weights, lexical_k=lexical_k,
                               report={**learned.report, **report, "chosen": "learned"})
        return FusionModel(lexical_k=lexical_k, report={**report, "chosen": "rrf",
                                                        "reason": "learned weights below RRF on the held-out half",
                                                        "learned_weights": list(learned.weights)})

    return fit


def _bucket_masks(queries: Sequence[str]) -> dict[str, np.ndarray]:
    b = np.asarray([length_bucket(q) for q in queries])
    return {name: b == name for name in LENGTH_BUCKETS}


def hybrid_eval_judged(candidates: Candidates, judged: Any, fusion: FusionModel | None, ks: Sequence[int] = (10, 100),
                       ) -> dict[str, Any]:
    """Judged metrics (`evaluate.judged_metrics`: R@k, nDCG@10) of every system, overall and per
    query-length bucket. candidates[i] belongs to judged.queries[i]."""
    from upper_fast_train.evaluate import Judgments, judged_metrics

    out: dict[str, Any] = {}
    masks = _bucket_masks(judged.queries)
    for system in SYSTEMS:
        if system == "learned" and (fusion is None or fusion.method != "learned"):
            continue
        retrieved = rank_candidates(candidates, system, max(ks), fusion)
        res = {"all": judged_metrics(retrieved, judged, ks)}
        for name, mask in masks.items():
            idx = np.flatnonzero(mask)
            if idx.size:
                sub = Judgments([judged.queries[i] for i in idx], [judged.rows[i] for i in idx],
                                [judged.relevance[i] for i in idx])
                res[f"words {name}"] = judged_metrics(retrieved[idx], sub, ks)
        out[system] = res
    return out


def hybrid_eval_requests(retriever: Any, dataset: Any, window: str = "eval", k: int = 100,
                         lexical_k: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Purchase recall@k of dense only, lexical only, RRF and the bundle's fusion on a log window's
    requests (signed-in users by id, as served), overall, per segment (head / torso / tail / unseen,
    signed in / out: `evaluate.request_metrics`) and per query-length bucket."""
    from upper_fast_train.evaluate import build_requests, query_segments, request_metrics

    requests = build_requests(dataset, window)
    queries = [q or "" for q in requests.events.column("query").to_pylist()]
    from upper_fast_train.served import bundle_user_ids, served_users

    users = served_users(requests.events, set(bundle_user_ids(retriever.bundle_path)))
    cands = collect_candidates(retriever, queries, users, k=k, lexical_k=lexical_k, progress=progress)
    segments = query_segments(dataset, requests.query_keys)
    fusion = retriever._state.fusion
    masks = _bucket_masks(queries)
    purchase = requests.relevant["purchase"]
    out: dict[str, Any] = {"requests": len(requests), "fusion": fusion.method, "k": k}
    for system in SYSTEMS:
        if system == "learned" and fusion.method != "learned":
            continue
        retrieved = rank_candidates(cands, system, k, fusion)
        res = request_metrics(retrieved, requests, segments, (k,))
        for name, mask in masks.items():
            idx = np.flatnonzero(mask)
            res[f"purchase_recall@{k}/words {name}"] = _recall(retrieved[idx], [purchase[i] for i in idx])
            res[f"requests/purchase/words {name}"] = float(sum(len(purchase[i]) > 0 for i in idx))
        out[system] = res
    out["features"] = list(FUSION_FEATURES)
    return out


def hybrid_eval_bundle(bundle: str | Path, dataset: Any, window: str = "eval", k: int = 100,
                       progress: bool = False) -> dict[str, Any]:
    """`hybrid_eval_requests` on a bundle directory (`upper-fast eval RUN --bundle B --channels`).
    ValueError for a bundle without a lexical index."""
    from upper_fast import Retriever

    retriever = Retriever.load(bundle)
    if not retriever.has_lexical:
        raise ValueError(f"{bundle} has no lexical index: export it with lexical=True to compare channels")
    return hybrid_eval_requests(retriever, dataset, window=window, k=k, progress=progress)


def channels_table(report: dict[str, Any], label: str) -> str:
    """The `hybrid_eval_requests` report as a markdown table: purchase recall@k per system, overall,
    per segment and per query-length bucket."""
    k = report["k"]
    systems = [s for s in SYSTEMS if s in report]
    rows = [("all requests", "")] + [(f"  {s}", f"/{s}") for s in ("head", "torso", "tail", "unseen", "signed_in",
                                                                    "signed_out")]
    rows += [(f"  {b} words", f"/words {b}") for b in LENGTH_BUCKETS]
    first = report[systems[0]]
    lines = [f"Channels of the bundle ({label}; k = {k}; fusion {report['fusion']}):",
             f"| purchase recall@{k} | " + " | ".join(systems) + " | requests |", "|---" * (len(systems) + 2) + "|"]
    for title, suffix in rows:
        cells = [report[s].get(f"purchase_recall@{k}{suffix}", float("nan")) for s in systems]
        n = first.get(f"requests/purchase{suffix}", float("nan"))
        lines.append(f"| {title} | " + " | ".join("-" if v != v else f"{v:.3f}" for v in cells)
                     + f" | {'-' if n != n else int(n)} |")
    return "\n".join(lines)
