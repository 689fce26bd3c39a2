"""Evaluate what is served: a bundle searched through `upper_fast.Retriever`, exactly as a service
calls it (ONNX query tower, hydration, ANN, threshold pruning), on the same requests and metrics as
`evaluate_run`'s exact search.

A request's searcher is passed as the bundle knows it: a signed-in user by id (the history the bundle
holds, as of its export), a signed-out one as None. So the served figures include everything the
service does differently from the exact evaluation (ANN, boosting, pruning, the history snapshot).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast_train.evaluate import build_requests, query_segments, request_metrics

__all__ = ["check_bundle_of_run", "evaluate_served"]


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
    known = set(_bundle_users(bundle))
    queries = [str(q) for q in requests.events.column("query").to_pylist()]
    users = [u if u in known else None for u in requests.events.column("user_id").to_pylist()]
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


def _bundle_users(bundle: str | Path) -> list[str]:
    import pyarrow.parquet as pq

    return [str(u) for u in pq.read_table(Path(bundle) / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()]
