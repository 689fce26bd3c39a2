"""Hybrid retrieval latency at 1M products: the lexical engines alone (tantivy, what the bundle uses,
beside bm25s), and `Retriever.search` end to end, dense only against fused (docs/serving.md "Hybrid
retrieval").

    PYTHONPATH=python:training python benchmarks/bench_hybrid.py --n 1000000 --workdir DIR [--queries 2000]
        [--data ../shared/data] [--bm25s-queries 300] [--lexical-k 100] [--repeat 1] [--out result.json]

Titles are SYNTHETIC: each is a sequence of words drawn independently from the word frequencies of
the Home Depot titles, with the Home Depot title lengths, plus a unique model number; the queries
are the distinct Home Depot dev queries (REAL; without ../shared/data both fall back to a Zipf
vocabulary and queries drawn from it). Product vectors, users and the query tower are those of
benchmarks/bench_serving.py (random catalogue, i8 index + f32 re-rank, ef 128, a random tower, 1,000
users with cached vectors): this measures latency and memory, not quality. One thread.

Variants, each over the same queries in alternating halves: dense only; fused with RRF and with a
learned fusion (the native fusion, the lexical channel's default bound `max_postings`); fused RRF
with no bound; and the peer, fused RRF with no bound and the union and fusion in numpy
(`SearchStages.fuse_numpy`, the path before the native fusion). The lexical channel alone is timed
with and without the bound. With --repeat R every variant is timed R times (in turn); the result
gives the first pass, each pass's p99, and each query's best of the R passes.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serving  # noqa: E402
from bench_serving import machine, merge_percentiles, percentiles, time_calls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def vocabulary(data: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], str]:
    """(words, word probabilities, title lengths, queries, source)."""
    folder = data / "homedepot"
    if (folder / "products.csv").exists() and (folder / "dev.csv").exists():
        with open(folder / "products.csv", encoding="utf-8", errors="replace") as f:
            titles = [re.findall(r"\w+", r["title"].lower()) for r in csv.DictReader(f)]
        counts = collections.Counter(w for t in titles for w in t)
        with open(folder / "dev.csv", encoding="utf-8", errors="replace") as f:
            queries = list(dict.fromkeys(r["query"] for r in csv.DictReader(f)))
        words = np.array(list(counts))
        p = np.array([counts[w] for w in words], np.float64)
        return words, p / p.sum(), np.array([len(t) for t in titles]), queries, "Home Depot title word frequencies (REAL)"
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(60000)])
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    p /= p.sum()
    queries = [" ".join(words[rng.choice(len(words), rng.integers(1, 7), p=p)]) for _ in range(2000)]
    return words, p, rng.integers(6, 15, 5000), queries, "Zipf(1.05) over 60,000 words (SYNTHETIC)"


def synthetic_titles(n: int, words: np.ndarray, p: np.ndarray, lengths: np.ndarray, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lens = rng.choice(lengths, n)
    drawn = words[rng.choice(len(words), size=int(lens.sum()), p=p)]
    out, at = [], 0
    for i, length in enumerate(lens.tolist()):
        out.append(" ".join(drawn[at: at + length]) + f" mx{i:07d}")
        at += length
    return out


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def engines_alone(titles: list[str], queries: list[str], root: Path, k: int, bm25s_queries: int) -> dict[str, Any]:
    """tantivy through upper_fast.lexical.LexicalIndex, and bm25s (tokenize + retrieve), k hits each."""
    from upper_fast.lexical import LexicalIndex, build_lexical_index

    out: dict[str, Any] = {}
    lex = root / "lexical-only"
    t0 = time.perf_counter()
    if not (lex / "lexical.json").exists():
        lex.mkdir(parents=True, exist_ok=True)
        build_lexical_index(titles, lex)
        out["tantivy_build_s"] = time.perf_counter() - t0
    before = rss_bytes()
    index = LexicalIndex.load(lex, len(titles))
    out["tantivy"] = time_calls(lambda q: index.search(q, k), queries)
    out["tantivy_rss_growth_bytes_per_product"] = (rss_bytes() - before) / len(titles)
    out["tantivy_file_bytes_per_product"] = index.memory_bytes() / len(titles)
    del index
    try:
        import bm25s
    except ImportError:
        return out
    if bm25s_queries <= 0:
        return out
    t0 = time.perf_counter()
    before = rss_bytes()
    bm = bm25s.BM25()
    bm.index(bm25s.tokenize(titles, stopwords="en", show_progress=False), show_progress=False)
    out["bm25s_build_s"] = time.perf_counter() - t0
    out["bm25s_index_bytes_per_product"] = sum(bm.scores[key].nbytes for key in ("data", "indices", "indptr")) / len(titles)
    out["bm25s_rss_growth_bytes_per_product"] = (rss_bytes() - before) / len(titles)

    def bm25s_search(q: str) -> Any:
        tokens = bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)
        if not tokens or not tokens[0]:
            return None
        return bm.retrieve(tokens, k=k, show_progress=False, n_threads=0)

    out["bm25s"] = time_calls(bm25s_search, queries[:bm25s_queries], warmup=10)
    out["bm25s_queries"] = min(bm25s_queries, len(queries))
    return out


def hybrid_bundle(root: Path, n: int, titles: list[str]) -> Path:
    """bench_serving's 1M bundle (random catalogue, i8 + f32 re-rank) with a lexical channel over `titles`."""
    from upper_fast.bundle import add_lexical_channel, read_manifest

    bench_serving.CATALOGUE = "random"
    path = root / bench_serving.bundle_name(n, "i8")
    if not (path / "manifest.json").exists():
        bench_serving.build_bundle(root, n, bench_serving.bench_tower(), index_dtype="i8")
    if "lexical" not in read_manifest(path):
        add_lexical_channel(path, titles)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, required=True, help="bundles are built here once and reused")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--lexical-k", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed passes over the queries per variant: e2e is the first pass; with more, also each query's best")
    ap.add_argument("--bm25s-queries", type=int, default=300, help="bm25s is timed on this many queries (0: skip bm25s)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from upper_fast import Retriever
    from upper_fast.lexical import FUSION_FEATURES, FusionModel
    from upper_fast.retriever import SearchStages

    args.workdir.mkdir(parents=True, exist_ok=True)
    words, p, lengths, queries, source = vocabulary(args.data)
    titles = synthetic_titles(args.n, words, p, lengths)
    queries = (queries * (1 + args.queries // max(1, len(queries))))[: args.queries]
    result: dict[str, Any] = {"machine": machine(), "threads": 1, "n_products": args.n, "k": args.k,
                              "lexical_k": args.lexical_k, "vocabulary": source, "queries": len(queries)}
    print(result["machine"], flush=True)
    result["engines"] = engines_alone(titles, queries, args.workdir, args.lexical_k, args.bm25s_queries)

    bundle = hybrid_bundle(args.workdir, args.n, titles)
    r = Retriever.load(bundle, num_threads=1)
    rng = np.random.default_rng(3)
    cases = [(q, f"u{rng.integers(0, 1000)}" if i % 4 else None) for i, q in enumerate(queries)]
    for q, u in cases:  # the users' vectors cached, as for a service's returning users
        r.search(q, user=u, k=args.k, lexical=False)
    learned = FusionModel(method="learned", weights=tuple(float(w) for w in np.linspace(1.0, 0.1, len(FUSION_FEATURES))))
    rrf = r.fusion
    lexical = r.stages().lexical

    def fused_learned(c: Any) -> Any:
        r.fusion = learned
        try:
            return r.search(c[0], user=c[1], k=args.k, lexical_k=args.lexical_k)
        finally:
            r.fusion = rrf

    budget = lexical.max_postings

    def fused_rrf(c: Any) -> Any:
        return r.search(c[0], user=c[1], k=args.k, lexical_k=args.lexical_k)

    def unbounded(fn: Any) -> Any:
        def run(c: Any) -> Any:
            lexical.max_postings = None
            try:
                return fn(c)
            finally:
                lexical.max_postings = budget
        return run

    def numpy_fusion(fn: Any) -> Any:  # the peer: union and fusion in numpy (SearchStages.fuse_numpy)
        def run(c: Any) -> Any:
            native = SearchStages.fuse
            SearchStages.fuse = SearchStages.fuse_numpy  # type: ignore[method-assign]
            try:
                return fn(c)
            finally:
                SearchStages.fuse = native  # type: ignore[method-assign]
        return run

    variants = {"dense": lambda c: r.search(c[0], user=c[1], k=args.k, lexical=False), "fused_rrf": fused_rrf,
                "fused_learned": fused_learned, "fused_rrf_unbounded": unbounded(fused_rrf),
                "fused_rrf_numpy_unbounded": numpy_fusion(unbounded(fused_rrf))}
    half = len(cases) // 2
    passes: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        runs: dict[str, list[Any]] = {name: [] for name in variants}
        for part in (cases[:half], cases[half:]):  # alternating halves, so VM drift hits every variant
            for name, fn in variants.items():
                runs[name].append(time_calls(fn, part))
        for name, parts in runs.items():
            passes[name].append(np.asarray(merge_percentiles(*parts)["samples_us"]))
    result["repeat"] = args.repeat
    result["e2e"] = {name: percentiles(p[0].tolist()) for name, p in passes.items()}
    if args.repeat > 1:  # each query's fastest pass: its own cost, with less of the machine's noise
        result["e2e_best_of_repeats"] = {name: percentiles(np.min(p, axis=0).tolist()) for name, p in passes.items()}
        result["e2e_p99_per_pass_us"] = {name: [float(np.percentile(x, 99)) for x in p] for name, p in passes.items()}
    result["max_postings"] = budget
    result["lexical_in_bundle"] = time_calls(lambda q: lexical.search(q, args.lexical_k), queries)
    lexical.max_postings = None
    result["lexical_in_bundle_unbounded"] = time_calls(lambda q: lexical.search(q, args.lexical_k), queries)
    lexical.max_postings = budget
    result["machine_after"] = machine()
    result["lexical_file_bytes_per_product"] = lexical.memory_bytes() / args.n
    result["index_recall_at_100"] = r.manifest["index"]["recall_at_100"]
    result = bench_serving._without_samples(result)
    e, eng = result["e2e"], result["engines"]
    print(f"lexical alone, k={args.lexical_k}, {len(queries)} queries: tantivy p50 {eng['tantivy']['p50_us']:.0f} / "
          f"p99 {eng['tantivy']['p99_us']:.0f} us, {eng['tantivy_file_bytes_per_product']:.1f} B/product on disk "
          f"(RSS +{eng['tantivy_rss_growth_bytes_per_product']:.1f} B/product after the queries)")
    if "bm25s" in eng:
        print(f"  bm25s (tokenize + retrieve, {eng['bm25s_queries']} queries) p50 {eng['bm25s']['p50_us']:.0f} / "
              f"p99 {eng['bm25s']['p99_us']:.0f} us, index {eng['bm25s_index_bytes_per_product']:.1f} B/product")
    print(f"max_postings {budget} (the _unbounded variants: None); fusion native, the _numpy variant: numpy")
    for name, v in e.items():
        line = f"Retriever.search {name}: p50 {v['p50_us']:.0f} / p99 {v['p99_us']:.0f} us"
        if "e2e_best_of_repeats" in result:
            b = result["e2e_best_of_repeats"][name]
            line += (f"; p99 per pass " + " / ".join(f"{x:.0f}" for x in result["e2e_p99_per_pass_us"][name])
                     + f"; each query's best of {args.repeat}: p50 {b['p50_us']:.0f} / p99 {b['p99_us']:.0f} us")
        print(line)
    for name in ("lexical_in_bundle", "lexical_in_bundle_unbounded"):
        print(f"{name.replace('_', ' ')}: p50 {result[name]['p50_us']:.0f} / p99 {result[name]['p99_us']:.0f} us")
    print(f"lexical index {result['lexical_file_bytes_per_product']:.1f} B/product; {result['machine_after']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
