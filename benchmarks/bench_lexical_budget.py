"""The lexical channel's bound on a query's work (`upper_fast.lexical.LexicalIndex.max_postings`):
tantivy latency at 1M products (SYNTHETIC titles of benchmarks/bench_hybrid.py) and BM25-alone quality
on the judged Home Depot dev queries (REAL), per bound.

    PYTHONPATH=python:training python benchmarks/bench_lexical_budget.py --workdir DIR [--n 1000000]
        [--budgets none,200000,150000,100000,50000] [--queries 2000] [--repeat 3] [--skip-quality]
        [--data ../shared/data] [--out result.json]

Latency: DIR/lexical-only from bench_hybrid.py (built there when absent), k = 100, one thread, the
distinct Home Depot dev queries, the bounds timed in turn `--repeat` times: p50 / p99 of the first
pass, and of each query's best pass (its own cost, with less of the machine's load). Also the cost
model: each query's best unbounded time fitted as a + b * postings + c * terms (least squares).

Quality: an index over the 54,667 Home Depot titles (built once in DIR/homedepot-lexical), the 2,306
dev queries, BM25's top 100 each: nDCG@10 and R@10 / R@100 (relevant: relevance >= 2.5; nDCG gain
relevance - 1), overall and per query-length bucket (words: 1, 2, 3, 4-5, 6+), and how many queries
lose a term. Each bound is applied twice: as it is (what this 54,667-product catalogue gets) and
scaled to the same share of the catalogue as at --n products (bound * 54,667 / n: what a catalogue of
n products with Home Depot's term statistics would lose).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hybrid  # noqa: E402
from bench_serving import machine, time_calls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_budgets(text: str) -> list[int | None]:
    return [None if b.strip().lower() == "none" else int(b) for b in text.split(",")]


def homedepot_index(data: Path, workdir: Path) -> tuple[Any, Any]:
    """(LexicalIndex over the Home Depot titles, dev Judgments in that index's rows)."""
    import pyarrow as pa

    from upper_fast.lexical import LexicalIndex, build_lexical_index
    from upper_fast_train.evaluate import Judgments

    folder = data / "homedepot"
    with open(folder / "products.csv", encoding="utf-8", errors="replace") as f:
        products = list(csv.DictReader(f))
    with open(folder / "dev.csv", encoding="utf-8", errors="replace") as f:
        dev = list(csv.DictReader(f))
    root = workdir / "homedepot-lexical"
    if not (root / "lexical.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        build_lexical_index([p["title"] for p in products], root, fields=("title",))
    table = pa.table({"query": [r["query"] for r in dev], "product_id": [r["product_uid"] for r in dev],
                      "relevance": [float(r["relevance"]) for r in dev]})
    judged = Judgments.from_table(table, pa.array([p["product_uid"] for p in products]))
    return LexicalIndex.load(root, len(products)), judged


def quality(index: Any, judged: Any, budget: int | None, k: int = 100) -> dict[str, Any]:
    from upper_fast_train.evaluate import Judgments, judged_metrics
    from upper_fast_train.fusion import LENGTH_BUCKETS, length_bucket

    index.max_postings = budget
    retrieved = np.full((len(judged.queries), k), -1, np.int64)
    dropped = 0
    for i, q in enumerate(judged.queries):
        rows, _ = index.search(q, k)
        retrieved[i, : rows.size] = rows
        if budget is not None:
            terms = {t: df for t, df in index.query_terms(q)}
            dropped += len(terms) > 1 and sum(terms.values()) > budget
    out: dict[str, Any] = {"all": judged_metrics(retrieved, judged, (10, 100)), "queries_losing_a_term": dropped}
    buckets = np.array([length_bucket(q) for q in judged.queries])
    for name in LENGTH_BUCKETS:
        idx = np.flatnonzero(buckets == name)
        sub = Judgments([judged.queries[i] for i in idx], [judged.rows[i] for i in idx], [judged.relevance[i] for i in idx])
        out[f"words {name}"] = judged_metrics(retrieved[idx], sub, (10, 100))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--budgets", type=parse_budgets, default=parse_budgets("none,200000,150000,100000,50000"),
                    help="bounds in postings at --n products, comma-separated; none = every term")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the queries per budget")
    ap.add_argument("--skip-quality", action="store_true", help="latency only (no Home Depot index)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from upper_fast.lexical import LexicalIndex, build_lexical_index

    result: dict[str, Any] = {"machine": machine(), "threads": 1, "n_products": args.n, "k": 100,
                              "budgets": [str(b) for b in args.budgets], "quality": {}, "latency": {}}
    print(result["machine"], flush=True)
    hd, judged = (None, None) if args.skip_quality else homedepot_index(args.data, args.workdir)
    for b in ([] if args.skip_quality else args.budgets):
        scaled = None if b is None else max(1, round(b * hd.n_products / args.n))
        for name, bound in ((f"{b}", b), (f"{b} scaled to {scaled}", scaled)):
            if name in result["quality"]:
                continue
            res = quality(hd, judged, bound)
            result["quality"][name] = res
            a = res["all"]
            print(f"Home Depot dev (REAL), BM25 alone, max_postings {name}: nDCG@10 {a['nDCG@10']:.4f}  "
                  f"R@10 {a['R@10']:.4f}  R@100 {a['R@100']:.4f}  queries losing a term {res['queries_losing_a_term']}",
                  flush=True)

    words, p, lengths, queries, source = bench_hybrid.vocabulary(args.data)
    lex = args.workdir / "lexical-only"
    if not (lex / "lexical.json").exists():
        lex.mkdir(parents=True, exist_ok=True)
        build_lexical_index(bench_hybrid.synthetic_titles(args.n, words, p, lengths), lex)
    index = LexicalIndex.load(lex, args.n)
    queries = (queries * (1 + args.queries // max(1, len(queries))))[: args.queries]
    result["latency_vocabulary"] = source
    runs: dict[str, list[np.ndarray]] = {str(b): [] for b in args.budgets}
    for _ in range(args.repeat):  # the budgets in turn, so load drift hits each alike
        for b in args.budgets:
            index.max_postings = b
            runs[str(b)].append(np.asarray(time_calls(lambda q: index.search(q, 100), queries)["samples_us"]))
    for b in args.budgets:
        once, best = runs[str(b)][0], np.min(runs[str(b)], axis=0)
        t = {"p50_us": float(np.percentile(once, 50)), "p99_us": float(np.percentile(once, 99)),
             "best_of_repeats_p50_us": float(np.percentile(best, 50)),
             "best_of_repeats_p99_us": float(np.percentile(best, 99)), "best_of_repeats_max_us": float(best.max())}
        result["latency"][str(b)] = t
        print(f"tantivy at {args.n:,} products (SYNTHETIC titles), max_postings {b}: p50 {t['p50_us']:.0f} / "
              f"p99 {t['p99_us']:.0f} us; each query's best of {args.repeat}: p50 {t['best_of_repeats_p50_us']:.0f} / "
              f"p99 {t['best_of_repeats_p99_us']:.0f} / max {t['best_of_repeats_max_us']:.0f} us", flush=True)
    if None in args.budgets:  # the cost model, on each query's best unbounded pass
        best = np.min(runs["None"], axis=0)
        terms = [dict(index.query_terms(q)) for q in queries]
        postings = np.array([sum(t.values()) for t in terms], np.float64)
        design = np.c_[np.ones(len(queries)), postings, [len(t) for t in terms]]
        coef = np.linalg.lstsq(design, best, rcond=None)[0]
        result["cost_model"] = {"intercept_us": float(coef[0]), "ns_per_posting": float(coef[1] * 1e3),
                                "us_per_term": float(coef[2]), "correlation_postings": float(np.corrcoef(postings, best)[0, 1])}
        print(f"cost model (best unbounded passes): {coef[0]:.0f} us + {coef[1] * 1e3:.2f} ns per posting + "
              f"{coef[2]:.0f} us per term; correlation with postings {result['cost_model']['correlation_postings']:.3f}")
    result["machine_after"] = machine()
    print(result["machine_after"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
