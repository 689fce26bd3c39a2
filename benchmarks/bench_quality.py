"""Retrieval quality report: real judged data (Home Depot dev, Crowdflower) and simulated logs.

    python benchmarks/bench_quality.py [--out DIR] [--homedepot-queries N] [--no-minilm]

Real data is read at run time from ../shared/data beside the checkout (or $UPPER_FAST_SHARED_DATA)
and never copied; each real-data section is skipped, with the reason printed, where it is absent.
Systems: BM25 (bm25s, English stopwords, titles), all-MiniLM-L6-v2 off the shelf (cosine), and, when
$UPPER_FAST_RUN names a training run directory, our model (signed-out query tower, since judged data
have no users). When $UPPER_FAST_DATA names a simulated dataset directory, the report adds purchase
recall on its later window (BM25, and the run when given), labelled "simulated".
Writes DIR/quality_report.md and DIR/quality_report.json (default DIR: the current directory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("UPPER_FAST_SHARED_DATA", REPO.parent / "shared" / "data"))


def machine() -> str:
    import torch

    from upper_fast import simd_level

    cpu = cpu_model()
    return (
        f"{cpu}; {os.cpu_count()} cores; SIMD {simd_level()}; torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}"
    )


def judged_section(name: str, dataset: Any, judged: Any, run: Any, minilm: bool, relevant_at: float) -> dict[str, Any]:
    """Every system on one judged set: {system: metrics}."""
    from upper_fast_train.baselines import bm25_judged, minilm_judged
    from upper_fast_train.evaluate import evaluate_judged, run_query_encoder
    from upper_fast_train.text import product_texts

    corpus = product_texts(dataset.catalog)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    out["BM25 (bm25s, English stopwords)"] = bm25_judged(corpus, judged, progress=False, relevant_at=relevant_at)
    print(f"[{name}] BM25 done in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if minilm:
        t = time.perf_counter()
        out["all-MiniLM-L6-v2 (cosine)"] = minilm_judged(
            corpus, judged, progress=True, cache_dir=Path.home() / ".cache" / "upper_fast", relevant_at=relevant_at
        )
        print(f"[{name}] MiniLM done in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if run is not None:
        t = time.perf_counter()
        products = np.ascontiguousarray(run.encode_products(dataset.catalog), dtype=np.float32)
        out["upper_fast run (signed-out)"] = evaluate_judged(
            run_query_encoder(run), products, judged, relevant_at=relevant_at
        )
        print(f"[{name}] run done in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out


def simulated_section(data_dir: Path, run: Any) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast_train.evaluate import bm25_baseline, evaluate_run

    dataset = load_dataset(data_dir, progress=False)
    out: dict[str, Any] = {"BM25 (title + tags)": bm25_baseline(dataset, progress=False)}
    if run is not None:
        out["upper_fast run"] = evaluate_run(run, dataset, progress=False)
        out["upper_fast run, user features blanked"] = evaluate_run(run, dataset, progress=False, personalized=False)
    return out


def fmt(value: Any, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{int(value):,}" if column == "queries" else f"{value:.3f}"


def json_safe(value: Any) -> Any:
    """NaN (an empty group) becomes null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def markdown(report: dict[str, Any]) -> str:
    lines = ["# upper_fast retrieval quality report", "", f"Machine: {report['machine']}", ""]
    for section, body in report["sections"].items():
        lines.append(f"## {section}")
        if "skipped" in body:
            lines += ["", f"Skipped: {body['skipped']}", ""]
            continue
        lines += ["", body["about"], ""]
        systems = body["systems"]
        cols = body["columns"]
        lines.append("| system | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for name, metrics in systems.items():
            lines.append(f"| {name} | " + " | ".join(fmt(metrics.get(c), c) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--homedepot-queries", type=int, default=0, help="sample this many dev queries (0 = all)")
    parser.add_argument("--no-minilm", action="store_true", help="skip the MiniLM baseline (minutes on 2 cores)")
    args = parser.parse_args(argv)

    from upper_fast_train.realdata import load_crowdflower, load_homedepot
    from upper_fast_train.evaluate import Judgments

    run = None
    run_dir = os.environ.get("UPPER_FAST_RUN")
    if run_dir:
        from upper_fast_train import load_run

        run = load_run(Path(run_dir))
    report: dict[str, Any] = {"machine": machine(), "run": run_dir, "sections": {}}
    sections = report["sections"]
    judged_cols = ["R@10", "R@100", "R@1000", "nDCG@10", "queries"]

    root = shared_data_dir()
    hd_root = root / "homedepot"
    if (hd_root / "products.csv").exists():
        dataset, table = load_homedepot(hd_root, "dev")
        judged = Judgments.from_table(table, dataset.catalog.column("product_id"))
        if args.homedepot_queries:
            judged = judged.subset(args.homedepot_queries, seed=0)
        sections["Home Depot dev (real, judged)"] = {
            "about": f"{len(judged.queries)} dev queries, retrieval over all {dataset.catalog.num_rows:,} products; "
            "relevant when relevance >= 2.5, nDCG gain = relevance - 1, unjudged = 0.",
            "columns": judged_cols,
            "systems": judged_section("homedepot", dataset, judged, run, not args.no_minilm, 2.5),
        }
    else:
        sections["Home Depot dev (real, judged)"] = {"skipped": f"no Home Depot data at {hd_root}"}

    cf_root = root / "crowdflower"
    if (cf_root / "judgments.csv").exists():
        dataset, table = load_crowdflower(cf_root)
        judged = Judgments.from_table(table, dataset.catalog.column("product_id"))
        sections["Crowdflower (real, judged)"] = {
            "about": f"{len(judged.queries)} queries over {dataset.catalog.num_rows:,} titles; relevant when "
            "median relevance >= 3 (of 4), nDCG gain = relevance - 1.",
            "columns": judged_cols,
            "systems": judged_section("crowdflower", dataset, judged, run, not args.no_minilm, 3.0),
        }
    else:
        sections["Crowdflower (real, judged)"] = {"skipped": f"no Crowdflower data at {cf_root}"}

    sim_dir = os.environ.get("UPPER_FAST_DATA")
    if sim_dir:
        sections["Simulated marketplace (simulated)"] = {
            "about": f"simulated logs at {sim_dir}: purchase recall over the whole catalogue on events after "
            "train_end (see docs/evaluation.md for the request and segment definitions).",
            "columns": [
                "purchase_recall@100", "purchase_recall@1000", "purchase_recall@100/head",
                "purchase_recall@100/torso", "purchase_recall@100/tail", "purchase_recall@100/unseen",
                "purchase_recall@100/signed_in", "purchase_recall@100/signed_out", "personalization_degree",
            ],
            "systems": simulated_section(Path(sim_dir), run),
        }
    else:
        sections["Simulated marketplace (simulated)"] = {"skipped": "set UPPER_FAST_DATA to a simulated dataset dir"}

    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (args.out / "quality_report.md").write_text(text + "\n")
    (args.out / "quality_report.json").write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
