"""The live catalogue and live user events on the demo bundle (SIMULATED data).

    PYTHONPATH=python:training python benchmarks/bench_live.py DEMO [--out result.json]

DEMO: an `upper-fast demo --out DEMO` directory (DEMO/run, DEMO/data; the `logs` preset, whose text
encoder is all-MiniLM-L6-v2). The script:

1. export time of DEMO/run with and without the product tower (the ONNX export and its parity check);
2. one new product searchable: `upsert_products` of one row at a time, p50 / p99 of the call and its
   split (validate, encode, hydrate, apply = index add under the write lock), each product found by a
   filtered search right after the call;
3. 8 threads searching while 1,000 upserts and 1,000 removals run: errors, lost or duplicated
   products, RSS before / after, search latency during the churn against before it;
4. `observe`: p50 / p99 per single-event call, and that the user's next search reflects it;
5. cold products: the simulator's listings created during the test window (after train_end) are
   encoded at export in one bundle; a second bundle is exported without them and they are upserted
   live; purchase recall@100 of the test window's purchases of them, served (user id + query), in
   both, beside the recall of the other products' purchases.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": int(a.size)}


def new_rows(catalog: Any, n: int, prefix: str, seed: int) -> list[dict[str, Any]]:
    """n catalogue rows drawn from the demo catalogue under new product ids (realistic text/fields)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(catalog.num_rows, n, replace=n > catalog.num_rows)
    rows = catalog.take(pick).to_pylist()
    for i, r in enumerate(rows):
        r["product_id"] = f"{prefix}{i:06d}"
    return rows


def export(run: Path, data: Any, out: Path, product_tower: bool) -> tuple[float, dict[str, Any]]:
    from upper_fast_train.export import export_bundle

    t0 = time.perf_counter()
    manifest = export_bundle(run, out, data, overwrite=True, progress=False, product_tower=product_tower)
    return time.perf_counter() - t0, manifest


def bench_upsert_latency(bundle: Path, catalog: Any, n: int) -> dict[str, Any]:
    from upper_fast import Retriever

    r = Retriever.load(bundle)
    t0 = time.perf_counter()
    r.upsert_products(new_rows(catalog, 1, "WARM", 1))  # loads the product tower
    first = (time.perf_counter() - t0) * 1e3
    total, split = [], {k: [] for k in ("validate", "encode", "hydrate", "apply")}
    found = 0
    for row in new_rows(catalog, n, "ONE", 2):
        t0 = time.perf_counter()
        report = r.upsert_products([row])
        total.append((time.perf_counter() - t0) * 1e3)
        for k in split:
            split[k].append(report["timings_ms"][k])
        found += r.search(row["title"], k=1, filter=[row["product_id"]], prune=False).product_ids == [row["product_id"]]
    return {"first_call_ms (loads the product tower)": first, "upsert_ms": pct(total),
            "split_ms": {k: pct(v) for k, v in split.items()}, "searchable_right_after": f"{found}/{n}"}


def bench_churn(bundle: Path, catalog: Any, threads: int, n: int) -> dict[str, Any]:
    from upper_fast import Retriever

    r = Retriever.load(bundle)
    queries = [str(q) for q in catalog.column("title").to_pylist()[:200]]
    r.upsert_products(new_rows(catalog, 1, "WARM", 1))
    base = []
    for q in queries:
        t0 = time.perf_counter()
        r.search(q, k=100)
        base.append((time.perf_counter() - t0) * 1e3)
    rss_before = rss_mb()
    n_before = r.num_products
    errors: list[str] = []
    lat: list[float] = []
    stop = threading.Event()

    def searcher(i: int) -> None:
        j = i
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r.search(queries[j % len(queries)], k=100)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))
            lat.append((time.perf_counter() - t0) * 1e3)
            j += threads

    workers = [threading.Thread(target=searcher, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    rows = new_rows(catalog, n, "CHURN", 3)
    ids = [row["product_id"] for row in rows]
    base_ids = [str(p) for p in catalog.column("product_id").to_pylist()[:n]]
    # step i: upsert CHURN i, then remove CHURN i-1 (odd i) or catalogue product i (even i)
    removed = [ids[i - 1] if i % 2 else base_ids[i] for i in range(n)]
    t0 = time.perf_counter()
    upsert_ms, remove_ms = [], []
    try:
        for i, row in enumerate(rows):
            t1 = time.perf_counter()
            r.upsert_products([row])
            t2 = time.perf_counter()
            r.remove_products([removed[i]])
            upsert_ms.append((t2 - t1) * 1e3)
            remove_ms.append((time.perf_counter() - t2) * 1e3)
    finally:
        stop.set()
        for w in workers:
            w.join()
    churn_s = time.perf_counter() - t0
    gone = set(removed)
    lost = extra = 0
    for pid in ids + base_ids:
        hits = r.search("gift", k=5, filter=[pid], prune=False, lexical=False).product_ids
        expect = 0 if pid in gone else 1
        lost += len(hits) < expect
        extra += len(hits) > expect
    pids = r.stages().product_ids
    return {"threads": threads, "upserts": n, "removals": n, "seconds": churn_s, "errors": len(errors),
            "error_examples": errors[:3], "lost": int(lost), "duplicated_or_resurrected": int(extra),
            "distinct_ids": len(set(pids)) == len(pids), "rows": [n_before, r.num_products],
            "rss_mb": [rss_before, rss_mb()], "search_ms_before": pct(base), "search_ms_during": pct(lat),
            "upsert_ms_during": pct(upsert_ms), "remove_ms_during": pct(remove_ms)}


def bench_observe(bundle: Path, catalog: Any, n: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from upper_fast import Retriever

    r = Retriever.load(bundle)
    users = pq.read_table(bundle / "users.parquet").column("user_id").to_pylist()
    pids = [str(p) for p in catalog.column("product_id").to_pylist()]
    rng = np.random.default_rng(4)
    kinds = ["click", "favorite", "add_to_cart", "purchase", "impression"]
    events = [(users[rng.integers(len(users))], pids[rng.integers(len(pids))], kinds[rng.integers(5)],
               1_800_000_000 + i, f"query {i % 50}") for i in range(n)]
    for e in events[:200]:  # warm-up
        r.observe([e])
    per_call = []
    for e in events[200:]:
        t0 = time.perf_counter_ns()
        r.observe([e])
        per_call.append((time.perf_counter_ns() - t0) / 1000.0)
    t0 = time.perf_counter()
    r.observe(events)
    batch_us = (time.perf_counter() - t0) / len(events) * 1e6
    user = users[0]
    before = r.stages().user_vector(user).copy()
    r.search("gift", user=user, k=10)
    r.observe([(user, pids[0], "purchase", 1_900_000_000, "gift")])
    after = r.stages().user_vector(user)
    return {"observe_us_single_event_call": pct(per_call), "observe_us_per_event_in_batch_of_n": batch_us,
            "next_search_reflects_it": bool(not np.array_equal(before, after))}


def purchases_of(dataset: Any, ids: set[str]) -> list[tuple[str, str, str]]:
    import pyarrow.compute as pc

    log = dataset.window("test")
    log = log.filter(pc.equal(log.column("interaction"), "purchase"))
    out = []
    for u, q, p in zip(log.column("user_id").to_pylist(), log.column("query").to_pylist(),
                       log.column("product_id").to_pylist()):
        if q and str(p) in ids:
            out.append((u, q, str(p)))
    return out


def recall(retriever: Any, events: list[tuple[str, str, str]], k: int = 100) -> float:
    hits = sum(p in retriever.search(q, user=u, k=k).product_ids for u, q, p in events)
    return hits / max(1, len(events))


def bench_cold(demo: Path, dataset: Any, full_bundle: Path, work: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from upper_fast import Retriever

    meta = json.loads((demo / "data" / "dataset.json").read_text())
    truth = pq.read_table(demo / "data" / "ground_truth_products.parquet")
    created = truth.column("created_at").to_numpy()
    new_ids = {str(p) for p, c in zip(truth.column("product_id").to_pylist(), created) if c >= meta["train_end"]}
    catalog = dataset.catalog
    is_new = pc.is_in(catalog.column("product_id"), value_set=pa.array(sorted(new_ids)))
    without = catalog.filter(pc.invert(is_new))
    rows_new = catalog.filter(is_new).to_pylist()
    old_ids = {str(p) for p in without.column("product_id").to_pylist()}
    events_new, events_old = purchases_of(dataset, new_ids), purchases_of(dataset, old_ids)
    exported = Retriever.load(full_bundle)
    report: dict[str, Any] = {"new_listings": len(new_ids), "test_purchases_of_new": len(events_new),
                              "test_purchases_of_others": len(events_old),
                              "recall_at_100_new_encoded_at_export": recall(exported, events_new),
                              "recall_at_100_others_full_bundle": recall(exported, events_old)}
    dataset.catalog = without  # the same run exported without the new listings
    try:
        seconds, _ = export(demo / "run", dataset, work / "bundle-without-new", True)
    finally:
        dataset.catalog = catalog
    live = Retriever.load(work / "bundle-without-new")
    report["recall_at_100_new_before_upsert"] = recall(live, events_new)
    t0 = time.perf_counter()
    live.upsert_products(rows_new)
    report["upsert_all_new_s"] = time.perf_counter() - t0
    report["recall_at_100_new_upserted_live"] = recall(live, events_new)
    report["recall_at_100_others_live_bundle"] = recall(live, events_old)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where the exported bundles go (default: a temp dir)")
    ap.add_argument("--single", type=int, default=300, help="single-product upserts timed")
    ap.add_argument("--churn", type=int, default=1000, help="upserts and removals under search load")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from bench_serving import machine

    from upper_fast.data import load_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-live-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.demo / "data", progress=False)
    report: dict[str, Any] = {"data": "SIMULATED", "machine": machine(), "demo": str(args.demo),
                              "products": dataset.catalog.num_rows, "date": time.strftime("%Y-%m-%d")}
    without_s, _ = export(args.demo / "run", dataset, work / "bundle-no-product-tower", False)
    with_s, manifest = export(args.demo / "run", dataset, work / "bundle", True)
    report["export_s"] = {"without_product_tower": without_s, "with_product_tower": with_s,
                          "product_tower_parity_max_abs": manifest["product_tower_parity_max_abs"]}
    print(json.dumps(report, indent=1), flush=True)
    bundle = work / "bundle"
    for name, fn in (("upsert_one", lambda: bench_upsert_latency(bundle, dataset.catalog, args.single)),
                     ("churn", lambda: bench_churn(bundle, dataset.catalog, args.threads, args.churn)),
                     ("observe", lambda: bench_observe(bundle, dataset.catalog, args.events)),
                     ("cold_products", lambda: bench_cold(args.demo, dataset, bundle, work))):
        report[name] = fn()
        report[name]["load_avg_after"] = os.getloadavg()[0]
        print(name, json.dumps(report[name], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
