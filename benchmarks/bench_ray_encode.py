"""Catalogue encoding on Ray Data: products/s with 1 and 2 encoder actors on a local Ray runtime, the
single-process torch path of `upper-fast export` in the same run, and whether the vectors are identical.

    PYTHONPATH=python:training python benchmarks/bench_ray_encode.py RUN [--products 100000] [--bundle B]
        [--out result.json]

RUN: a training run (e.g. `upper-fast demo --out D` -> D/run; `--small-model` for the tiny preset).
The catalogue is SIMULATED: `upper_fast_train.simulate.generate` with --products products (seed 1),
so most products are unknown to the run and go through the cold path (no graph node), like a new
catalogue. The frozen-text-encoder cache of the run is turned off everywhere, so every path encodes.

Paths, each over the whole catalogue, each timed end to end:
- torch, one process: `export.encode_products` (what export does without --workers/--ray), with 1
  torch thread and with 2;
- Ray, 1 and 2 actors of 1 torch thread (`ray_encode.encode_catalogue_ray` on `ray.init(num_cpus=2)`),
  actor start and model load included; "steady" = rows after the first shard over the time from the
  first shard written to the last (actor start excluded);
- with --bundle, the bundle's ONNX product tower (`upper_fast.products.ProductEncoder`, 1 thread) on
  the first 20,000 products (a per-core figure beside the torch one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def _steady(shard_dir: Path, n: int) -> float:
    """Products/s between the first and the last shard written (actor start and model load excluded)."""
    metas = sorted(shard_dir.glob("product_vectors.shard-*.json"), key=lambda p: p.stat().st_mtime)
    if len(metas) < 2:
        return float("nan")
    first = json.loads(metas[0].read_text())["rows"]
    span = metas[-1].stat().st_mtime - metas[0].stat().st_mtime
    return (n - (first[1] - first[0])) / span if span > 0 else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--bundle", type=Path, default=None, help="also time this bundle's ONNX product tower")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    from bench_serving import machine

    from upper_fast.data import load_dataset
    from upper_fast_train import load_run
    from upper_fast_train.export import encode_products, merge_product_shards
    from upper_fast_train.ray_encode import connect_ray, encode_catalogue_ray
    from upper_fast_train.simulate import generate

    report: dict[str, Any] = {"data": "SIMULATED", "machine": machine(), "run": str(args.run),
                              "products": args.products, "batch_size": args.batch_size, "load_avg_start": _load()}
    print(f"catalogue encoding, SIMULATED catalogue of {args.products:,} products; {report['machine']}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp) / "world", seed=1, n_products=args.products, n_users=200, n_queries=200, n_events=2000,
                 progress=False)
        catalog = load_dataset(Path(tmp) / "world", progress=False).catalog
        report["generate_s"] = time.perf_counter() - t0
        run = load_run(args.run)
        run.train_config = run.train_config.replace(text_cache_dir=None)
        n = catalog.num_rows
        rows: list[dict[str, Any]] = []

        vectors = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            load = _load()
            t0 = time.perf_counter()
            vectors[threads] = encode_products(run, catalog, args.batch_size, progress=False)
            s = time.perf_counter() - t0
            rows.append({"path": f"torch, one process, {threads} thread{'s' if threads > 1 else ''}", "workers": 1,
                         "threads": threads, "seconds": s, "products_per_s": n / s, "load_avg": load})
            print(f"  {rows[-1]['path']:<34} {n / s:>9,.0f} products/s  ({s:.1f} s; load {load})")
        torch.set_num_threads(1)
        report["torch_1_vs_2_threads_identical"] = bool(np.array_equal(vectors[1], vectors[2]))

        ray = connect_ray(None, num_cpus=2)
        for workers in (1, 2):
            out = Path(tmp) / f"shards-{workers}"
            load = _load()
            r = encode_catalogue_ray(args.run, catalog, out, workers=workers, batch_size=args.batch_size)
            merged = merge_product_shards(out, n)
            same = bool(np.array_equal(merged, vectors[1]))
            rows.append({"path": f"Ray Data, {workers} actor{'s' if workers > 1 else ''} x 1 thread",
                         "workers": workers, "threads": 1, "seconds": r["seconds"],
                         "products_per_s": r["products_per_s"], "steady_products_per_s": _steady(out, n),
                         "shards": len(r["shards"]), "identical_to_torch_1_thread": same,
                         "max_abs_diff": float(np.abs(merged - vectors[1]).max()), "load_avg": load})
            print(f"  {rows[-1]['path']:<34} {r['products_per_s']:>9,.0f} products/s  ({r['seconds']:.1f} s; steady "
                  f"{rows[-1]['steady_products_per_s']:,.0f}/s; {len(r['shards'])} shards; identical: {same}; "
                  f"load {load})")
        ray.shutdown()

        if args.bundle is not None:
            from upper_fast import Featurizer, FeaturizerConfig
            from upper_fast.products import ProductEncoder

            featurizer = Featurizer(FeaturizerConfig.from_dict(json.loads((args.bundle / "featurizer.json").read_text())))
            encoder = ProductEncoder.load(args.bundle, featurizer, num_threads=1)
            part = catalog.slice(0, min(n, 20_000))
            load = _load()
            t0 = time.perf_counter()
            for lo in range(0, part.num_rows, args.batch_size):
                encoder.encode(part.slice(lo, args.batch_size))
            s = time.perf_counter() - t0
            rows.append({"path": "ONNX product tower (bundle), 1 thread", "workers": 1, "threads": 1, "seconds": s,
                         "products_per_s": part.num_rows / s, "products": part.num_rows, "load_avg": load})
            print(f"  {rows[-1]['path']:<34} {part.num_rows / s:>9,.0f} products/s  ({s:.1f} s over "
                  f"{part.num_rows:,}; load {load})")

    by = {(r["path"].split(",")[0], r["workers"], r["threads"]): r for r in rows}
    one, two = by[("Ray Data", 1, 1)], by[("Ray Data", 2, 1)]
    report["ratio_2_vs_1_workers"] = two["products_per_s"] / one["products_per_s"]
    report["ratio_2_vs_1_workers_steady"] = two["steady_products_per_s"] / one["steady_products_per_s"]
    report["ray_1_worker_vs_torch_1_thread"] = one["products_per_s"] / by[("torch", 1, 1)]["products_per_s"]
    report["rows"] = rows
    report["load_avg_end"] = _load()
    print(f"  2 actors / 1 actor: {report['ratio_2_vs_1_workers']:.2f}x end to end, "
          f"{report['ratio_2_vs_1_workers_steady']:.2f}x steady (target >= 1.7x on 2 cores); Ray 1 actor / torch "
          f"1 thread: {report['ray_1_worker_vs_torch_1_thread']:.2f}x; load avg {report['load_avg_start']} -> "
          f"{report['load_avg_end']} (a shared machine: other jobs take cores)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
