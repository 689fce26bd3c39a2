"""Featurizer throughput: queries per second per core for ``Featurizer.featurize``.

    PYTHONPATH=python python benchmarks/bench_featurizer.py [--repeats 15] [--threads 1]
    PYTHONPATH=python python -m pytest benchmarks/bench_featurizer.py --benchmark-only

Queries are the real Home Depot search queries (../shared/data/homedepot/train.csv, read at run
time, never copied); without that file, generated text is used and every print says "simulated".
Peer, same queries, same run: scikit-learn's HashingVectorizer (word 1-2 grams + char_wb 3-grams),
what a Python user would reach for.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from pathlib import Path

import numpy as np

from upper_fast import Featurizer, simd_level

from _machine import cpu_model  # noqa: E402


def _find_data() -> Path:
    # ../shared/data beside the checkout; a git worktree may sit one level deeper, so walk up.
    for parent in Path(__file__).resolve().parents[1].parents:
        candidate = parent / "shared" / "data" / "homedepot" / "train.csv"
        if candidate.exists():
            return candidate
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "homedepot" / "train.csv"


DATA = _find_data()


def load_queries(limit: int = 50_000) -> tuple[list[str], str]:
    """(queries, label): real Home Depot queries, or generated ones labelled simulated."""
    if DATA.exists():
        with DATA.open(newline="", encoding="utf-8") as fh:
            queries = [row["query"] for row in csv.DictReader(fh)][:limit]
        return queries, f"real Home Depot queries ({len(queries)}, {DATA.name})"
    rng = random.Random(0)
    words = ["angle", "bracket", "pvc", "pipe", "1/2", "in.", "drill", "bit", "Ölfilter", "led", "bulb", "x", "10", "ft"]
    queries = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(limit)]
    return queries, f"simulated generated queries ({len(queries)})"


def time_runs(fn, repeats: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def sklearn_peer(queries: list[str]):  # type: ignore[no-untyped-def]
    try:
        from sklearn.feature_extraction.text import HashingVectorizer
    except ImportError:
        return None
    words = HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=2**19, alternate_sign=False, norm=None)
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 3), n_features=2**17, alternate_sign=False, norm=None)
    return lambda: (words.transform(queries), chars.transform(queries))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    queries, label = load_queries()
    f = Featurizer()
    max_terms = f.config.max_query_terms
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cpus (1-min load {load:.1f}), "
          f"SIMD level {simd_level()} (not used here)")
    print(f"data: {label}; mean {np.mean([len(q) for q in queries]):.1f} chars per query")
    print(f"featurize(n={len(queries)}, max_terms={max_terms}), threads={args.threads}, repeats={args.repeats}")

    t = time_runs(lambda: f.featurize(queries, max_terms, num_threads=args.threads), args.repeats)
    med, p99 = np.median(t), np.percentile(t, 99)
    qps = len(queries) / med
    print(f"  upper_fast featurize: median {med * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms per batch -> "
          f"{qps:,.0f} queries/s ({qps / args.threads:,.0f} per core); target >= 200,000 per core")

    try:
        import pyarrow as pa

        column = pa.array(queries)
        ta = time_runs(lambda: f.featurize(column, max_terms, num_threads=args.threads), args.repeats)
        print(f"  upper_fast featurize(pyarrow column): median {np.median(ta) * 1e3:.2f} ms, "
              f"p99 {np.percentile(ta, 99) * 1e3:.2f} ms -> {len(queries) / np.median(ta):,.0f} queries/s")
    except ImportError:
        print("  pyarrow not installed: column path skipped")

    single = queries[:2000]
    lat = []
    for q in single:
        t0 = time.perf_counter()
        f.featurize([q], max_terms, num_threads=1)
        lat.append(time.perf_counter() - t0)
    lat_us = np.asarray(lat) * 1e6
    print(f"  single query featurize([q]) incl. Python call: p50 {np.median(lat_us):.2f} us, "
          f"p99 {np.percentile(lat_us, 99):.2f} us")

    peer = sklearn_peer(queries)
    if peer is None:
        print("  peer: scikit-learn not installed")
    else:
        tp = time_runs(peer, max(3, args.repeats // 3))
        print(f"  peer sklearn HashingVectorizer (word 1-2 + char_wb 3): median {np.median(tp) * 1e3:.2f} ms, "
              f"p99 {np.percentile(tp, 99) * 1e3:.2f} ms -> {len(queries) / np.median(tp):,.0f} queries/s (1 thread)")


def test_featurize_one_thread(benchmark) -> None:  # type: ignore[no-untyped-def]
    queries, label = load_queries(20_000)
    f = Featurizer()
    out = benchmark(f.featurize, queries, 32, 1)
    benchmark.extra_info.update(data=label, queries=len(queries), threads=1)
    assert out.shape == (len(queries), 32)


def test_featurize_single_query(benchmark) -> None:  # type: ignore[no-untyped-def]
    f = Featurizer()
    out = benchmark(f.featurize, ["stainless steel 1/2 in. hex bolt"], 32, 1)
    assert out.shape == (1, 32)


if __name__ == "__main__":
    main()
