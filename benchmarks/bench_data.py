"""Data-path timings: simulated-world generation and validation throughput (Parquet, CSV, JSONL).

Run: `PYTHONPATH=python python benchmarks/bench_data.py [--scale S] [--repeat R]`
(or under pytest-benchmark: `pytest benchmarks/bench_data.py --benchmark-enable`).

Prints the machine, thread count, and medians / p99 over the repeats. The peer figure is pyarrow's
own reader on the same file (`pyarrow.csv.read_csv` / `pyarrow.parquet.read_table`), which parses
but validates nothing: the gap is the price of per-row checks and quarantine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from _machine import cpu_model  # noqa: E402


def _machine() -> str:
    cpu = cpu_model()
    try:
        from upper_fast import simd_level

        simd = simd_level()
    except ImportError:
        simd = "n/a"
    return f"{cpu}, {os.cpu_count()} logical cores, SIMD level {simd}, Python {platform.python_version()}"


def _times(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), float(np.percentile(samples, 99))


def run(scale: float = 1.0, repeat: int = 3) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate

    print(f"machine: {_machine()}; threads: 1 (numpy/pyarrow defaults otherwise)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = root / "world"
        med, p99 = _times(lambda: generate(world, seed=0, scale=scale, progress=False), repeat)
        meta = generate(world, seed=0, scale=scale, progress=False)
        rows = meta["sizes"]["log_rows"]
        print(f"generate (simulated, scale {scale}: {meta['sizes']['products']} products, {rows} log rows): "
              f"median {med:.2f} s, p99 {p99:.2f} s")
        med, p99 = _times(lambda: load_dataset(world, progress=False), repeat)
        peer, _ = _times(lambda: pq.read_table(world / "search_log.parquet"), repeat)
        print(f"load_dataset parquet: median {med:.2f} s ({rows / med:,.0f} log rows/s), p99 {p99:.2f} s; "
              f"peer pyarrow.parquet.read_table (no checks): {peer:.3f} s")
        log = pq.read_table(world / "search_log.parquet")
        for fmt in ("csv", "jsonl"):
            d = root / fmt
            d.mkdir()
            (d / "catalog.parquet").write_bytes((world / "catalog.parquet").read_bytes())
            if fmt == "csv":
                pacsv.write_csv(log, d / "search_log.csv")
                peer, _ = _times(lambda: pacsv.read_csv(d / "search_log.csv"), repeat)
            else:
                import json

                with open(d / "search_log.jsonl", "w", encoding="utf-8") as fh:
                    for rec in log.to_pylist():
                        fh.write(json.dumps(rec) + "\n")
                import pyarrow.json as pajson

                peer, _ = _times(lambda: pajson.read_json(d / "search_log.jsonl"), repeat)
            med, p99 = _times(lambda: load_dataset(d, progress=False), repeat)
            print(f"load_dataset {fmt}: median {med:.2f} s ({rows / med:,.0f} log rows/s), p99 {p99:.2f} s; "
                  f"peer pyarrow {fmt} reader (no checks): {peer:.3f} s")


def test_bench_generate_default(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from upper_fast_train.simulate import generate

    meta = benchmark(lambda: generate(tmp_path / "w", seed=0, progress=False))
    assert meta["simulated"]


def test_bench_load_default(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate

    generate(tmp_path / "w", seed=0, progress=False)
    ds = benchmark(lambda: load_dataset(tmp_path / "w", progress=False))
    assert ds.report.reconciles()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    run(args.scale, args.repeat)
