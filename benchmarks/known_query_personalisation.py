"""Personalise only the queries the model knows: purchase recall@100 on the test window when each
request is answered with the personalised query vector if its query has a graph node (it occurred
in the training log) and with the same model's user-blanked vector otherwise, beside the model
personalised everywhere and blanked everywhere.

    PYTHONPATH=python:training python benchmarks/known_query_personalisation.py --data DIR --run RUN [--run RUN ...]
        [--out result.json]

Exact top-100 by inner product over the whole catalogue; the requests are the test window's purchase
rows of catalogued products, each with its user's history as of its search (`TrainedRun.event_query_inputs`).
A dataset whose dataset.json says simulated is labelled SIMULATED.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def score_run(dataset: Any, run_dir: Path) -> dict[str, Any]:
    import pyarrow.compute as pc

    from upper_fast import topk_inner_product
    from upper_fast_train import load_run

    run = load_run(run_dir, dataset)
    ids = [str(p) for p in dataset.catalog.column("product_id").to_pylist()]
    row_of = {p: i for i, p in enumerate(ids)}
    products = np.ascontiguousarray(run.encode_products(dataset.catalog), dtype=np.float32)
    log = dataset.window("test")
    log = log.filter(pc.is_in(log.column("product_id"), value_set=dataset.catalog.column("product_id")))
    events = log.filter(pc.equal(log.column("interaction"), "purchase"))
    targets = np.array([row_of[p] for p in events.column("product_id").to_pylist()], np.int64)
    hits, known = {}, None
    for personalised in (True, False):
        inputs = run.event_query_inputs(events, dataset, personalized=personalised)
        if personalised:
            known = inputs["query_graph_mask"] > 0
        q = np.ascontiguousarray(run.encode_queries(inputs), dtype=np.float32)
        top = np.asarray(topk_inner_product(q, products, 100)[0])
        hits[personalised] = (top == targets[:, None]).any(1)
    assert known is not None
    policy = np.where(known, hits[True], hits[False])

    def share(h: np.ndarray, rows: np.ndarray | None = None) -> float:
        part = h if rows is None else h[rows]
        return float(part.mean()) if part.size else float("nan")

    out = {"run": str(run_dir), "requests": int(len(targets)), "known_query_share": share(known)}
    for name, rows in (("all", None), ("known", known), ("unknown", ~known)):
        out[name] = {"personalised": share(hits[True], rows), "blanked": share(hits[False], rows),
                     "known_only": share(policy, rows)}
    return out


def main() -> None:
    from upper_fast.data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dataset = load_dataset(args.data, progress=False)
    label = "SIMULATED" if dataset.meta.get("simulated") else "real"
    results = []
    for run_dir in args.run:
        r = score_run(dataset, run_dir)
        results.append(r)
        print(f"{label} {args.data} {run_dir}: purchase recall@100 personalised {r['all']['personalised']:.4f}, "
              f"blanked {r['all']['blanked']:.4f}, personalised on known queries only {r['all']['known_only']:.4f} "
              f"({r['requests']} requests, {r['known_query_share']:.1%} with a known query)", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"data": str(args.data), "label": label, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
