"""The Milvus backend of the Retriever against its in-process index: push time, top-100 overlap, latency.

    PYTHONPATH=python:training python benchmarks/bench_milvus.py BUNDLE --data DATA \
        [--queries 1000] [--index HNSW FLAT] [--out result.json]

BUNDLE: an exported search bundle; DATA: its dataset directory. The requests are the distinct
(query, user) pairs of the test window's log rows with a query (a seeded sample of --queries of
them; users the bundle does not know are served signed out, as a service would).

For each index type (HNSW with the bundle's M / efConstruction, FLAT = exact), into a fresh Milvus
Lite file (a local .db URI) under a temp dir:
1. `push_to_milvus` wall time, and the index Milvus reports for the collection (`describe_index`);
2. a Retriever served from the collection (`MilvusBackend`) beside one on the bundle's own index,
   the same requests through both: top-100 overlap |A & B| / |A| (A = in-process hits), dense only
   without pruning (both return 100) and with pruning, and with the bundle's default channels
   (hybrid when it has a lexical index) pruned;
3. per-query latency of `Retriever.search(k=100)` (one thread, warm-up first), in process and through
   Milvus, measured back to back, and of the ANN step alone on the same hydrated queries.
Also the ANN recall@100 of both against the exact top-100 (brute force over the bundle's hydrated
product vectors, the scores both stores rank by).

Milvus Lite runs its gRPC server as threads of this process, reached over loopback: a Milvus
cluster adds a network hop and its own query-node scheduling that this does not measure.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

K = 100
WARMUP = 50


def machine() -> dict[str, Any]:
    import upper_fast

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": upper_fast.simd_level(),
            "upper_fast": upper_fast.__version__, "threads_per_search": 1, "load_avg_start": os.getloadavg()[0]}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("pymilvus", "milvus-lite", "faiss-cpu", "onnxruntime", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def window_requests(data: Path, n: int, known_users: set[str], seed: int = 0) -> tuple[list[tuple[str, str | None]], int]:
    """A seeded sample of n distinct (query, user) pairs of the test window's rows with a query, and
    how many distinct pairs the window has. Users outside the bundle become None (signed out)."""
    from upper_fast.data import load_dataset

    log = load_dataset(data, progress=False).window("test")
    seen: dict[tuple[str, str | None], None] = {}
    for q, u in zip(log.column("query").to_pylist(), log.column("user_id").to_pylist()):
        if q:
            seen.setdefault((str(q), str(u) if u is not None and str(u) in known_users else None), None)
    pairs = list(seen)
    if not pairs:
        raise ValueError(f"the test window of {data} has no log rows with a query")
    pick = np.random.default_rng(seed).choice(len(pairs), min(n, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(pick)], len(pairs)


def hydrated_queries(retriever: Any, requests: list[tuple[str, str | None]]) -> np.ndarray:
    """The hydrated query vectors [q ; w (; 0)] (m, index_dim) float32 the ANN step receives."""
    pipe = retriever.stages()
    out = []
    for q, u in requests:
        buf = pipe.buffers(1)
        out.append(pipe.hydrate(buf, pipe.encode(buf, (q,), (u,)))[0].copy())
    return np.stack(out)


def exact_top(products: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """Rows of the exact top-k by inner product for each query (brute force, float64 accumulation)."""
    scores = queries.astype(np.float64) @ products.astype(np.float64).T  # (m, n)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return [set(map(int, row)) for row in top]


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "p01": float(np.percentile(a, 1)),
            "share_ge_0.95": float((a >= 0.95).mean()), "share_eq_1": float((a == 1.0).mean()), "n": int(a.size)}


def pct_ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "n": int(a.size)}


def overlaps(local: Any, remote: Any, requests: list[tuple[str, str | None]], **kw: Any) -> dict[str, Any]:
    """|A & B| / |A| per request (A = in-process hits), requests where A is empty left out and counted."""
    out, empty, same_count = [], 0, 0
    for q, u in requests:
        a = local.search(q, user=u, k=K, **kw).product_ids
        b = remote.search(q, user=u, k=K, **kw).product_ids
        same_count += len(a) == len(b)
        if not a:
            empty += 1
            continue
        out.append(len(set(a) & set(b)) / len(a))
    report: dict[str, Any] = stats(out) if out else {"n": 0}
    report.update({"in_process_empty": empty, "same_hit_count": same_count / len(requests)})
    return report


def paired_latency(first: Any, second: Any, calls: list[Any]) -> tuple[list[float], list[float]]:
    """Milliseconds per call of first(c) and second(c), alternated call by call (so both see the same
    machine load), after a warm-up of each."""
    for c in calls[:WARMUP]:
        first(c)
        second(c)
    a, b = [], []
    for c in calls:
        t0 = time.perf_counter()
        first(c)
        t1 = time.perf_counter()
        second(c)
        t2 = time.perf_counter()
        a.append((t1 - t0) * 1e3)
        b.append((t2 - t1) * 1e3)
    return a, b


def compare_ms(a: list[float], b: list[float]) -> dict[str, Any]:
    return {"in_process": pct_ms(a), "milvus": pct_ms(b),
            "ratio_p50": float(np.percentile(b, 50) / np.percentile(a, 50)),
            "ratio_p99": float(np.percentile(b, 99) / np.percentile(a, 99))}


def ann_recall(rows: list[np.ndarray], exact: list[set[int]]) -> dict[str, float]:
    return stats([len(set(map(int, r[r >= 0])) & e) / len(e) for r, e in zip(rows, exact)])


def lite_index_files(db: Path) -> list[dict[str, Any]]:
    """What Milvus Lite wrote as the vector index of each sealed segment: the file, and for a FAISS
    file the index class, its HNSW M / efConstruction and vector count (describe_index in Lite
    reports the requested type and no parameters)."""
    out = []
    for f in sorted(db.rglob("*.idx")):
        entry: dict[str, Any] = {"file": f.name, "bytes": f.stat().st_size}
        try:
            import faiss

            index = faiss.read_index(str(f))
            entry.update({"faiss_class": type(index).__name__, "ntotal": int(index.ntotal)})
            if hasattr(index, "hnsw"):
                entry.update({"M": int(index.hnsw.nb_neighbors(1)), "efConstruction": int(index.hnsw.efConstruction)})
        except Exception as exc:  # noqa: BLE001 - not a FAISS file (Lite's brute-force format): say so
            entry["faiss"] = f"not a FAISS index ({type(exc).__name__})"
        out.append(entry)
    return out


def lite_split_ms(backend: Any, hydrated: np.ndarray, ef: int, db: Path) -> dict[str, float]:
    """Where a Milvus search's time goes (p50 ms over 300 calls): a gRPC round trip that does no
    work (has_collection), a search for 1 and for K hits straight through the client, and, for an
    HNSW collection, the FAISS index Lite wrote searched alone in this process."""
    client, col = backend.client, backend.collection
    params = {"metric_type": "IP", "params": {"ef": ef}}
    q = hydrated[0]

    def p50(fn: Any) -> float:
        for _ in range(WARMUP):
            fn()
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return float(np.percentile(times, 50))

    out = {"round_trip_has_collection": p50(lambda: client.has_collection(col)),
           "client_search_k1": p50(lambda: client.search(col, data=[q], limit=1, anns_field="vector",
                                                         output_fields=["row"], search_params=params)),
           f"client_search_k{K}": p50(lambda: client.search(col, data=[q], limit=K, anns_field="vector",
                                                           output_fields=["row"], search_params=params))}
    files = sorted(db.rglob("*.hnsw.idx"))
    if len(files) == 1:
        import faiss

        index = faiss.read_index(str(files[0]))
        index.hnsw.efSearch = ef
        out[f"faiss_hnsw_alone_k{K}"] = p50(lambda: index.search(q[None, :], K))
    return out


def bench_index(bundle: Path, index_type: str, local: Any, requests: list[tuple[str, str | None]],
                hydrated: np.ndarray, exact: list[set[int]], work: Path) -> dict[str, Any]:
    from upper_fast import Retriever
    from upper_fast.milvus import MilvusBackend, push_to_milvus

    uri = str(work / f"{index_type.lower()}.db")
    t0 = time.perf_counter()
    summary = push_to_milvus(bundle, uri, index_type=index_type)
    push_s = time.perf_counter() - t0
    backend = MilvusBackend(uri)
    remote = Retriever.load(bundle, num_threads=1, backend=backend)
    client = backend.client
    described = client.describe_index(backend.collection, client.list_indexes(backend.collection)[0])
    report: dict[str, Any] = {"index": index_type, "uri": "Milvus Lite file (local .db)", "push_s": push_s,
                              "push_summary": {k: v for k, v in summary.items() if k not in ("collection", "uri")},
                              "milvus_describe_index": dict(described),
                              "lite_index_files": lite_index_files(Path(uri))}
    report["overlap_at_100"] = {
        "dense_unpruned": overlaps(local, remote, requests, prune=False, lexical=False),
        "dense_pruned": overlaps(local, remote, requests, prune=True, lexical=False)}
    if local.has_lexical:
        report["overlap_at_100"]["default_channels_pruned"] = overlaps(local, remote, requests, prune=True)

    here, there = local.stages(), remote.stages()
    rows_milvus = [there.ann(h, K)[0][0] for h in hydrated[:, None, :]]
    report["ann_recall_at_100_vs_exact"] = ann_recall(rows_milvus, exact)

    lat: dict[str, Any] = {}
    modes = [("dense", {"lexical": False})] + ([("default_channels", {})] if local.has_lexical else [])
    for mode, kw in modes:
        a, b = paired_latency(lambda r, kw=kw: local.search(r[0], user=r[1], k=K, **kw),
                              lambda r, kw=kw: remote.search(r[0], user=r[1], k=K, **kw), requests)
        lat[f"search_ms_{mode}"] = compare_ms(a, b)
    queries = [np.ascontiguousarray(h[None, :]) for h in hydrated]
    lat["ann_only_ms"] = compare_ms(*paired_latency(lambda h: here.ann(h, K), lambda h: there.ann(h, K), queries))
    lat["milvus_lite_split_p50_ms"] = lite_split_ms(backend, hydrated, max(local.ef, K), Path(uri))
    report["latency"] = lat
    report["load_avg_after"] = os.getloadavg()[0]
    return report


def run(bundle: Path, requests: list[tuple[str, str | None]], index_types: list[str], work: Path) -> dict[str, Any]:
    from upper_fast import Retriever
    from upper_fast.bundle import Bundle

    local = Retriever.load(bundle, num_threads=1)
    manifest = local.manifest
    hydrated = hydrated_queries(local, requests)
    products = Bundle.open(bundle, verify=False).hydrated_products()
    exact = exact_top(products, hydrated, K)
    ef = max(local.ef, K)
    here = local.stages()
    rows_local = [here.ann(h, K)[0][0] for h in hydrated[:, None, :]]
    idx = manifest.get("index", {})
    report: dict[str, Any] = {
        "bundle": {"path": str(bundle), "model_version": manifest["model_version"], "products": local.num_products,
                   "index_dim": manifest["dims"]["index_dim"], "index": idx, "hybrid": local.has_lexical},
        "k": K, "ef_search_both": ef, "requests": len(requests),
        "in_process_ann_recall_at_100_vs_exact": ann_recall(rows_local, exact)}
    report["results"] = [bench_index(bundle, t, local, requests, hydrated, exact, work) for t in index_types]
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="the bundle's dataset directory (test-window requests)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--index", nargs="+", choices=("HNSW", "FLAT"), default=["HNSW", "FLAT"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.queries < WARMUP:
        ap.error(f"--queries must be at least {WARMUP} (the warm-up)")

    import pyarrow.parquet as pq

    users = {str(u) for u in pq.read_table(args.bundle / "users.parquet", columns=["user_id"])
             .column("user_id").to_pylist()}
    requests, distinct = window_requests(args.data, args.queries, users)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, SIMD {info['simd']}, 1 thread per search, "
          f"load avg {info['load_avg_start']:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as work:
        report = run(args.bundle, requests, args.index, Path(work))
    meta = args.data / "dataset.json"
    simulated = meta.is_file() and bool(json.loads(meta.read_text()).get("simulated", False))
    report = {"data": "SIMULATED" if simulated else "as given", "date": time.strftime("%Y-%m-%d"), "machine": info,
              "versions": versions(),
              "dataset": str(args.data), "test_window_distinct_query_user_pairs": distinct,
              "signed_in_share": sum(u is not None for _, u in requests) / len(requests), **report,
              "load_avg_end": os.getloadavg()[0]}
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"in-process ANN recall@100 vs exact: {report['in_process_ann_recall_at_100_vs_exact']['mean']:.4f}")
    print(f"{'index':6} {'push s':>7} {'ovl nopr':>9} {'ovl pr':>7} {'rec@100':>8} "
          f"{'p50 in':>7} {'p50 mv':>7} {'p99 in':>7} {'p99 mv':>7} {'x p50':>6}")
    for r in report["results"]:
        o, lat = r["overlap_at_100"], r["latency"]["search_ms_dense"]
        print(f"{r['index']:6} {r['push_s']:7.2f} {o['dense_unpruned']['mean']:9.4f} {o['dense_pruned']['mean']:7.4f} "
              f"{r['ann_recall_at_100_vs_exact']['mean']:8.4f} {lat['in_process']['p50']:7.3f} {lat['milvus']['p50']:7.3f} "
              f"{lat['in_process']['p99']:7.3f} {lat['milvus']['p99']:7.3f} {lat['ratio_p50']:6.2f}")
        print(f"       Milvus Lite split (p50 ms): {r['latency']['milvus_lite_split_p50_ms']}")
        print(f"       describe_index: {r['milvus_describe_index']['index_type']}; built: {r['lite_index_files']}; "
              f"load avg {r['load_avg_after']:.2f}")


if __name__ == "__main__":
    main()
