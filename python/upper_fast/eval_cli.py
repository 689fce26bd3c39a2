"""`upper-fast eval RUN`: offline evaluation of a training run (needs the [train] extra at run time)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from upper_fast.data.windows import add_window_arguments, window_arguments

__all__ = ["add_commands"]

# Rows of the printed table under each purchase recall@k.
_BREAKDOWN = ("head", "torso", "tail", "unseen", "signed_in", "signed_out")
_TYPES = ("click", "favorite", "add_to_cart", "purchase")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a training run: purchase recall on the later window, personalisation, baselines",
        description="Evaluate RUN on the events after the dataset's train_end (purchase recall@k over the "
        "whole catalogue, per interaction type, head/torso/tail, signed-in/out, Kendall-tau "
        "personalisation), beside the same model with user features blanked and a BM25 baseline.",
    )
    p.add_argument("run", type=Path, help="training run directory (written by `upper-fast train`)")
    p.add_argument("--data", type=Path, default=None, help="dataset directory (default: the one in RUN/config.json)")
    p.add_argument(
        "--homedepot",
        nargs="?",
        type=Path,
        const=Path("../shared/data/homedepot"),
        default=None,
        metavar="DIR",
        help="also score the Home Depot dev judgments (default DIR: ../shared/data/homedepot)",
    )
    p.add_argument("--bundle", type=Path, default=None,
                   help="also score this bundle (exported from RUN) as served: Retriever.search_batch with ANN, "
                   "boosting and pruning, beside exact search; with search latency")
    p.add_argument("--ks", type=int, nargs="+", default=[100, 1000], help="recall cut-offs (default 100 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_window_arguments(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    try:
        from upper_fast_train import load_run
        from upper_fast_train.evaluate import bm25_baseline, evaluate_run
    except ImportError as exc:
        raise ImportError(f"`upper-fast eval` needs the training extra: pip install upper_fast[train] ({exc})") from exc
    from upper_fast.data import load_dataset

    progress = not args.no_progress
    if args.bundle is not None:  # a wrong bundle fails before any work
        from upper_fast_train.served import check_bundle_of_run

        check_bundle_of_run(args.bundle, args.run)
    data_dir = args.data
    if data_dir is None:
        config = json.loads((args.run / "config.json").read_text())
        found = (config.get("run") or {}).get("data_dir") or config.get("data_dir")  # flat: older runs
        if not found:
            raise ValueError(f"{args.run}/config.json names no dataset: pass --data DIR")
        data_dir = Path(found)
    dataset = load_dataset(data_dir, progress=progress, **window_arguments(args))
    run = load_run(args.run, dataset)
    simulated = bool((dataset.meta or {}).get("simulated"))
    label = "simulated" if simulated else "real"
    ks = tuple(args.ks)

    systems = {
        "model": evaluate_run(run, dataset, ks=ks, progress=progress),
        "model, user features blanked": evaluate_run(run, dataset, ks=ks, progress=progress, personalized=False),
        "BM25 (title + tags)": bm25_baseline(dataset, ks=ks, progress=progress),
    }
    report: dict[str, Any] = {"data": label, "dataset": str(data_dir), "run": str(args.run), "window": "eval"}
    report["systems"] = systems
    if args.homedepot is not None:
        report["homedepot_dev"] = _homedepot(run, args.homedepot, progress)
    if args.bundle is not None:
        from upper_fast_train.served import evaluate_served

        report["served"] = evaluate_served(args.bundle, dataset, k=min(ks), progress=progress)

    if args.json:
        print(json.dumps(_json_safe(report), indent=2, allow_nan=False))
        return 0
    print(f"# upper-fast eval ({label} data: {data_dir}; events after train_end)\n")
    print(_recall_table(systems, ks, label))
    model = systems["model"]
    print(
        f"\nPersonalisation ({label}): mean Kendall tau {model['kendall_tau_mean']:.3f} "
        f"(degree 1 - tau = {model['personalization_degree']:.3f}) over "
        f"{int(model['personalization_pairs'])} user pairs sharing a query"
    )
    if "served" in report:
        print("\n" + _served_table(systems["model"], report["served"], min(ks), label))
    if "homedepot_dev" in report:
        hd = report["homedepot_dev"]
        print("\nHome Depot dev (real judgments, signed-out queries):")
        print("| R@10 | R@100 | R@1000 | nDCG@10 | queries |\n|---|---|---|---|---|")
        print(f"| {hd['R@10']:.3f} | {hd['R@100']:.3f} | {hd['R@1000']:.3f} | {hd['nDCG@10']:.3f} | {int(hd['queries'])} |")
    return 0


def _homedepot(run: Any, root: Path, progress: bool) -> dict[str, float]:
    import numpy as np

    from upper_fast.data.realdata import load_homedepot
    from upper_fast_train.evaluate import Judgments, evaluate_judged, run_query_encoder

    if not (root / "products.csv").exists():
        raise OSError(f"Home Depot data not found at {root} (expected products.csv, dev.csv)")
    hd, judged_table = load_homedepot(root, "dev", progress=progress)
    judged = Judgments.from_table(judged_table, hd.catalog.column("product_id"))
    products = np.ascontiguousarray(run.encode_products(hd.catalog), dtype=np.float32)
    return evaluate_judged(run_query_encoder(run), products, judged)


def _recall_table(systems: dict[str, dict[str, float]], ks: tuple[int, ...], label: str) -> str:
    rows = []
    for k in ks:
        rows.append((f"purchase recall@{k}", f"purchase_recall@{k}"))
        rows += [(f"  {s}", f"purchase_recall@{k}/{s}") for s in _BREAKDOWN]
        rows += [(f"  {t} recall@{k}", f"recall@{k}/{t}") for t in _TYPES if t != "purchase"]
    names = list(systems)
    lines = [f"| {label} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(_fmt(systems[n].get(key)) for n in names) + " |")
    counts = systems[names[0]]
    lines.append(
        f"\nrequests with a purchase: {int(counts['requests/purchase'])} "
        + " ".join(f"{s}={int(counts[f'requests/purchase/{s}'])}" for s in _BREAKDOWN)
    )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _json_safe(value: Any) -> Any:
    """NaN (an empty group) becomes null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _served_table(exact: dict[str, float], served: dict[str, float], k: int, label: str) -> str:
    """Exact search against the bundle as served (ANN + boosting, then pruning), per segment."""
    rows = [("all requests", "")] + [(f"  {s}", f"/{s}") for s in _BREAKDOWN]
    lines = [f"Served through Retriever.search_batch ({label}; k = {k}; ef_search {served['ef_search']:.0f}):",
             "| purchase recall@{k} | exact (model) | served, no pruning | served | ANN + boosting | pruning |".format(k=k),
             "|---|---|---|---|---|---|"]
    for title, suffix in rows:
        key = f"purchase_recall@{k}{suffix}"
        e, u, s = exact.get(key), served.get(f"served_unpruned/{key}"), served.get(f"served/{key}")
        delta = (lambda a, b: "-" if a is None or b is None or math.isnan(a) or math.isnan(b) else f"{b - a:+.3f}")
        lines.append(f"| {title} | {_fmt(e)} | {_fmt(u)} | {_fmt(s)} | {delta(e, u)} | {delta(u, s)} |")
    lines.append(f"\npruning left {served['served/cut_share']:.1%} of the {k} slots empty "
                 f"({served['served/hits_mean']:.1f} hits per search on average); "
                 f"single-query search p50 {served['latency_ms_p50']:.2f} ms, p99 {served['latency_ms_p99']:.2f} ms "
                 "(one thread, user-vector cache on)")
    return "\n".join(lines)
