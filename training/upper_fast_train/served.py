"""Evaluate what is served: a bundle searched through `upper_fast.Retriever`, exactly as a service
calls it (ONNX query tower, hydration, ANN, threshold pruning), on the same requests and metrics as
`evaluate_run`'s exact search.

A request's searcher is passed as the bundle knows it: a signed-in user by id (the history the bundle
holds, as of its export), a signed-out one as None. So the served figures include everything the
service does differently from the exact evaluation (ANN, boosting, pruning, the history snapshot).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast.bundle import without_query_nodes
from upper_fast_train.evaluate import build_requests, query_segments, request_metrics

__all__ = ["EF_LADDER", "bundle_user_ids", "check_bundle_of_run", "check_run_windows", "choose_served_ef", "evaluate_served",
           "served_table", "served_users"]

# Rows of the served table under "all requests".
SEGMENT_ROWS = ("head", "torso", "tail", "unseen", "signed_in", "signed_out")

#: ef values `choose_served_ef` tries (each at least k); the largest is the near-exact reference.
EF_LADDER = (100, 128, 160, 200, 256, 320, 400, 512, 640, 800, 1024, 1536, 2048)
# A query segment (head / torso / tail / unseen) with at least this many validation purchase requests
# must also be within the tolerance of its own reference recall: queries the model has not seen are
# the ANN's hardest (their vectors fall between the products'), and the later traffic has more of
# them than the validation window, so the overall figure alone understates what a small ef costs there.
EF_SEGMENT_MIN_REQUESTS = 100
SEGMENTS = ("head", "torso", "tail", "unseen")
# Below this many validation purchase requests, ef is chosen on click recall instead.
EF_PURCHASE_MIN_REQUESTS = 30


def check_bundle_of_run(bundle: str | Path, run_dir: str | Path) -> None:
    """A ValueError when `bundle` was exported from another training run than `run_dir`."""
    from upper_fast.bundle import read_manifest

    manifest = read_manifest(bundle)
    exported_from = (manifest.get("run") or {}).get("dir")
    if exported_from is None:
        raise ValueError(f"{bundle} does not record the run it was exported from: re-export it with "
                         f"`upper-fast export {run_dir} {bundle} --data DATA --overwrite`")
    if Path(exported_from).resolve() != Path(run_dir).resolve():
        raise ValueError(f"{bundle} was exported from {exported_from}, not from {run_dir}: evaluate that run, or "
                         f"export this one with `upper-fast export {run_dir} NEW_BUNDLE --data DATA`")


def check_run_windows(run_dir: str | Path, windows: Any) -> None:
    """A ValueError when the run learned from another train window than `windows` has: fitting or
    evaluating on such windows would read events the model was trained on (or skip some it was not).
    Runs that do not record their windows pass."""
    import json

    recorded = (json.loads((Path(run_dir) / "config.json").read_text()).get("run") or {}).get("windows")
    if recorded is None or windows is None:
        return
    if int(recorded["train_end"]) != int(windows.train_end):
        raise ValueError(f"{run_dir} was trained on the window before train_end={recorded['train_end']}, but these "
                         f"windows put train_end at {windows.train_end}: pass --train-end {recorded['train_end']} "
                         f"--valid-end {recorded['valid_end']} (the run's windows), or retrain")


def evaluate_served(
    bundle: str | Path,
    dataset: Any,
    window: str = "test",
    k: int = 100,
    batch: int = 256,
    latency_sample: int = 300,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Purchase recall@k of the served pipeline on `window`, with and without pruning.

    Returns `request_metrics` keys for the pruned search ("served/...") and the unpruned one
    ("served_unpruned/..."), "served/cut_share" (the mean share of the k slots pruning left empty),
    "served/hits_mean", and single-query search latency over a seeded sample of requests
    ("latency_ms_p50", "latency_ms_p99", one thread, the Retriever's default user-vector cache).
    """
    from tqdm.auto import tqdm

    from upper_fast import Retriever

    requests = build_requests(dataset, window)
    if len(requests) == 0:
        raise ValueError(f"the {window!r} window has no engagement events to evaluate")
    retriever = Retriever.load(bundle, num_threads=1)
    queries = [str(q) for q in requests.events.column("query").to_pylist()]
    users = served_users(requests.events, set(bundle_user_ids(bundle)))
    catalog_rows = {str(p): i for i, p in enumerate(dataset.catalog.column("product_id").to_pylist())}

    out: dict[str, float] = {}
    segments = query_segments(dataset, requests.query_keys)
    for name, prune in (("served", True), ("served_unpruned", False)):
        retrieved = np.full((len(requests), k), -1, dtype=np.int64)
        counts = np.zeros(len(requests), dtype=np.int64)
        for start in tqdm(range(0, len(requests), batch), desc=f"search ({name})", disable=not progress, leave=False):
            results = retriever.search_batch(queries[start : start + batch], users[start : start + batch], k=k,
                                             prune=prune)
            for i, res in enumerate(results, start):
                rows = [catalog_rows.get(str(p), -1) for p in res.product_ids[: res.count]]
                retrieved[i, : len(rows)] = rows
                counts[i] = res.count
        metrics = request_metrics(retrieved, requests, segments, (k,))
        out.update({f"{name}/{key}": value for key, value in metrics.items()})
        out[f"{name}/hits_mean"] = float(counts.mean())
        out[f"{name}/cut_share"] = float(1.0 - counts.mean() / k)

    rng = np.random.default_rng(seed)
    sample = rng.choice(len(requests), min(latency_sample, len(requests)), replace=False)
    times = _latencies(retriever, [queries[i] for i in sample], [users[i] for i in sample], k)
    out["latency_ms_p50"] = float(np.percentile(times, 50))
    out["latency_ms_p99"] = float(np.percentile(times, 99))
    out["ef_search"] = float(retriever.manifest["index"]["ef_search"])
    return out


def _latencies(retriever: Any, queries: Sequence[str], users: Sequence[Any], k: int) -> np.ndarray:
    for q, u in zip(queries[:20], users[:20]):  # warm caches and onnxruntime
        retriever.search(q, user=u, k=k)
    times = np.empty(len(queries))
    for i, (q, u) in enumerate(zip(queries, users)):
        t0 = time.perf_counter()
        retriever.search(q, user=u, k=k)
        times[i] = (time.perf_counter() - t0) * 1e3
    return times


def served_users(events: Any, known: set[str]) -> list[Any]:
    """What a service passes as `user` for each request row (pyarrow table with user_id and, where
    the log has it, country): the user id when the bundle knows the user, else the shopper's country
    as a `UserContext` (a service knows a signed-out shopper's country as the log did), else None.
    The exact evaluation gives the model the same country, so served and exact figures compare."""
    from upper_fast import UserContext

    ids = events.column("user_id").to_pylist()
    countries = events.column("country").to_pylist() if "country" in events.column_names else [None] * len(ids)
    return [str(u) if u is not None and str(u) in known else (UserContext(country=str(c)) if c else None)
            for u, c in zip(ids, countries)]


def bundle_user_ids(bundle: str | Path) -> list[str]:
    """The user ids whose histories a search bundle holds (users.parquet)."""
    import pyarrow.parquet as pq

    return [str(u) for u in pq.read_table(Path(bundle) / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()]


def _set_manifest_ef(bundle: Path, ef: int) -> None:
    """Set index.ef_search in a bundle's manifest (the manifest checksums the other files, not itself)."""
    import json

    path = Path(bundle) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("index", {})["ef_search"] = int(ef)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def choose_served_ef(bundle: str | Path, dataset: Any, *, window: str = "validation", k: int = 100,
                     tolerance: float = 0.005, ladder: Sequence[int] = EF_LADDER, max_requests: int = 3000,
                     latency_sample: int = 200, progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """The smallest ef whose served recall@k on `window` is within `tolerance` (absolute) of the
    served recall at the largest ef of `ladder` (a near-exact reference), overall and in every query
    segment with at least EF_SEGMENT_MIN_REQUESTS purchase requests, and on the requests for known
    queries searched again as new ones (no graph node, `upper_fast.bundle.without_query_nodes`) when
    there are that many of them; returns the report, with the recall curves and the single-thread
    latency at the chosen and the reference ef.

    Recall: purchase recall@k when the window has >= EF_PURCHASE_MIN_REQUESTS purchase requests, else
    click recall@k;
    searched unpruned through `Retriever.search_batch`, as a service calls it. Sets the chosen ef in
    the bundle's manifest (call it on a bundle that is still being written)."""
    from upper_fast import Retriever

    bundle = Path(bundle)
    requests = build_requests(dataset, window)
    if len(requests) == 0:
        raise ValueError(f"the {window!r} window has no engagement events to choose ef on")
    take = np.arange(len(requests))
    if len(take) > max_requests:
        take = np.sort(np.random.default_rng(seed).choice(len(take), max_requests, replace=False))
    queries = [str(requests.events.column("query")[int(i)].as_py()) for i in take]
    users = served_users(requests.events.take(take), set(bundle_user_ids(bundle)))
    catalog_rows = {str(p): i for i, p in enumerate(dataset.catalog.column("product_id").to_pylist())}
    sub = _take(requests, take)
    n_purchase = sum(len(r) > 0 for r in sub.relevant["purchase"])
    metric = f"purchase_recall@{k}" if n_purchase >= EF_PURCHASE_MIN_REQUESTS else f"recall@{k}/click"
    segments = query_segments(dataset, sub.query_keys)
    has_purchase = np.array([len(r) > 0 for r in sub.relevant["purchase"]])
    guarded = [] if metric != f"purchase_recall@{k}" else [
        s for s in SEGMENTS
        if int((has_purchase & (np.asarray(segments) == s)).sum()) >= EF_SEGMENT_MIN_REQUESTS]
    ladder = sorted({max(int(e), k) for e in ladder})
    # The validation requests whose query has a graph node, searched again as if the query were new
    # (terms only, `without_query_nodes`): the later traffic brings queries the model has never seen,
    # and the validation window, drawn from the training period, rarely has enough of them.
    known_query = np.asarray(segments) != "unseen"
    as_new = (np.flatnonzero(known_query) if metric == f"purchase_recall@{k}"
              and int((has_purchase & known_query).sum()) >= EF_SEGMENT_MIN_REQUESTS else np.zeros(0, np.int64))
    probe_dir = tempfile.TemporaryDirectory(prefix="upper-fast-new-queries-") if len(as_new) else None
    view = without_query_nodes(bundle, Path(probe_dir.name) / "view") if probe_dir is not None else None
    as_new_sub = _take(sub, as_new) if len(as_new) else None

    def served_rows(retriever: Any, take: np.ndarray) -> np.ndarray:
        retrieved = np.full((len(take), k), -1, dtype=np.int64)
        for start in range(0, len(take), 256):
            part = take[start : start + 256]
            for i, res in enumerate(retriever.search_batch([queries[j] for j in part], [users[j] for j in part],
                                                           k=k, prune=False), start):
                rows = [catalog_rows.get(str(p), -1) for p in res.product_ids[: res.count]]
                retrieved[i, : len(rows)] = rows
        return retrieved

    # One Retriever per bundle (and one for the view), with ef set for each rung of the ladder.
    retriever = Retriever.load(bundle, num_threads=1, verify=False)
    view_retriever = Retriever.load(view, num_threads=1, verify=False) if view is not None else None

    def recall_at(ef: int) -> dict[str, float]:
        retriever.ef = ef
        metrics = request_metrics(served_rows(retriever, np.arange(len(sub))), sub, segments, (k,))
        values = {"all": float(metrics[metric]), **{s: float(metrics[f"{metric}/{s}"]) for s in guarded}}
        if view_retriever is not None:
            view_retriever.ef = ef
            new_metrics = request_metrics(served_rows(view_retriever, as_new), as_new_sub, ["unseen"] * len(as_new), (k,))
            values["as_new_queries"] = float(new_metrics[metric])
        return values

    from tqdm.auto import tqdm

    bar = tqdm(total=len(ladder), desc="choose ef (served recall)", disable=not progress, leave=False)
    ref = recall_at(ladder[-1])
    reference = ref["all"]
    bar.update(1)
    curve = [[ladder[-1], reference]]
    checked = [s for s in ref if s != "all"]
    segment_curves = {s: [[ladder[-1], ref[s]]] for s in checked}
    chosen = ladder[-1]
    for ef in ladder[:-1]:
        values = recall_at(ef)
        bar.update(1)
        curve.append([ef, values["all"]])
        for s in checked:
            segment_curves[s].append([ef, values[s]])
        if all(values[s] >= ref[s] - tolerance for s in values):
            chosen = ef
            break
    bar.close()
    if probe_dir is not None:
        probe_dir.cleanup()
    _set_manifest_ef(bundle, chosen)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(sub), min(latency_sample, len(sub)), replace=False)
    lat_q, lat_u = [queries[i] for i in sample], [users[i] for i in sample]
    retriever.ef = chosen
    chosen_ms = _latencies(retriever, lat_q, lat_u, k)
    retriever.ef = ladder[-1]
    ref_ms = _latencies(retriever, lat_q, lat_u, k) if chosen != ladder[-1] else chosen_ms
    return {"by": "served recall", "window": window, "metric": metric, "requests": len(sub), "k": k,
            "tolerance": tolerance, "reference_ef": ladder[-1], "reference_recall": reference, "ef": chosen,
            "recall": dict((e, r) for e, r in curve)[chosen], "curve": sorted(curve),
            "segments_guarded": checked, "as_new_queries_requests": int(len(as_new)), "segment_curves": {s: sorted(c) for s, c in segment_curves.items()},
            "latency_ms_p50": float(np.percentile(chosen_ms, 50)), "latency_ms_p99": float(np.percentile(chosen_ms, 99)),
            "reference_latency_ms_p50": float(np.percentile(ref_ms, 50)),
            "reference_latency_ms_p99": float(np.percentile(ref_ms, 99))}


def _take(requests: Any, take: np.ndarray) -> Any:
    """The requests at positions `take`, in that order."""
    return type(requests)(events=requests.events.take(take), query_keys=[requests.query_keys[i] for i in take],
                          signed_in=requests.signed_in[take],
                          relevant={t: [v[i] for i in take] for t, v in requests.relevant.items()})


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def served_table(exact: dict[str, float], served: dict[str, float], k: int, label: str) -> str:
    """Exact search against the bundle as served (ANN + boosting, then pruning), per segment."""
    rows = [("all requests", "")] + [(f"  {s}", f"/{s}") for s in SEGMENT_ROWS]
    lines = [f"Served through Retriever.search_batch ({label}; k = {k}; ef_search {served['ef_search']:.0f}):",
             "| purchase recall@{k} | exact (model) | served, no pruning | served | ANN + boosting | pruning |".format(k=k),
             "|---|---|---|---|---|---|"]
    for title, suffix in rows:
        key = f"purchase_recall@{k}{suffix}"
        e, u, s = exact.get(key), served.get(f"served_unpruned/{key}"), served.get(f"served/{key}")
        delta = (lambda a, b: "-" if a is None or b is None or math.isnan(a) or math.isnan(b) else f"{b - a:+.3f}")
        lines.append(f"| {title} | {_fmt(e)} | {_fmt(u)} | {_fmt(s)} | {delta(e, u)} | {delta(u, s)} |")
    lines.append(f"\npruning left {served['served/cut_share']:.1%} of the {k} slots empty "
                 f"({served['served/hits_mean']:.1f} hits per search on average); "
                 f"single-query search p50 {served['latency_ms_p50']:.2f} ms, p99 {served['latency_ms_p99']:.2f} ms "
                 "(one thread, user-vector cache on)")
    return "\n".join(lines)
