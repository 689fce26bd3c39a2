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
        help="evaluate a training run: purchase recall on the test window, personalisation, baselines",
        description="Evaluate RUN on the dataset's test window (events from valid_end on; see --valid-end), "
        "or with --window validation on the validation window (from train_end to valid_end), the one to "
        "tune on (purchase recall@k over the "
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
    p.add_argument("--channels", action="store_true",
                   help="with --bundle (one with a lexical index): purchase recall of dense only, lexical only, RRF "
                   "and the bundle's fusion, per segment and per query length (upper_fast_train.fusion)")
    p.add_argument("--ks", type=int, nargs="+", default=[100, 1000], help="recall cut-offs (default 100 1000)")
    p.add_argument("--window", choices=("test", "validation"), default="test",
                   help="the log window to score (default test; tune choices on validation, report test)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_window_arguments(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    try:
        from upper_fast_train import load_run
        from upper_fast_train.evaluate import bm25_baseline, evaluate_run
    except ImportError as exc:
        raise ImportError(f"`upper-fast eval` needs the training extra: pip install upper-fast-train ({exc})") from exc
    from upper_fast.data import load_dataset

    progress = not args.no_progress
    if args.channels and args.bundle is None:
        raise ValueError("--channels scores a bundle's channels: pass --bundle BUNDLE too")
    if args.bundle is not None and args.window != "test":
        raise ValueError("--bundle scores the served pipeline on the test window only: a bundle holds user "
                         "histories as of valid_end and was calibrated on the validation window, so its "
                         f"{args.window} figures would see the answers; drop --bundle to score the run on "
                         f"the {args.window} window")
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
    if dataset.windows is None:
        raise ValueError(f"{data_dir} has no train_end, so no test window: add \"train_end\" to dataset.json or "
                         "pass --train-end")
    from upper_fast_train.served import check_run_windows

    check_run_windows(args.run, dataset.windows)
    if args.bundle is not None:
        _check_bundle_windows(args.bundle, dataset.windows)
    run = load_run(args.run, dataset)
    simulated = bool((dataset.meta or {}).get("simulated"))
    label = "simulated" if simulated else "real"
    ks = tuple(args.ks)
    name = args.window

    systems = {
        "model": evaluate_run(run, dataset, window=name, ks=ks, progress=progress),
        "model, user features blanked": evaluate_run(run, dataset, window=name, ks=ks, progress=progress,
                                                     personalized=False),
        "BM25 (title + tags)": bm25_baseline(dataset, window=name, ks=ks, progress=progress),
    }
    window = f"{name} window ({dataset.windows.describe()})"
    report: dict[str, Any] = {"data": label, "dataset": str(data_dir), "run": str(args.run), "window": name,
                              "windows": dataset.windows.to_dict()}
    report["systems"] = systems
    if args.homedepot is not None:
        report["homedepot_dev"] = _homedepot(run, args.homedepot, progress)
    if args.bundle is not None:
        from upper_fast_train.served import evaluate_served

        report["served"] = evaluate_served(args.bundle, dataset, window=name, k=min(ks), progress=progress)
    if args.channels:
        from upper_fast_train.fusion import hybrid_eval_bundle

        report["channels"] = hybrid_eval_bundle(args.bundle, dataset, window=name, k=min(ks), progress=progress)

    if args.json:
        print(json.dumps(_json_safe(report), indent=2, allow_nan=False))
        return 0
    print(f"# upper-fast eval ({label} data: {data_dir})\n# every figure below: {window}\n")
    print(_recall_table(systems, ks, label))
    model = systems["model"]
    print(
        f"\nPersonalisation ({label}): mean Kendall tau {model['kendall_tau_mean']:.3f} "
        f"(degree 1 - tau = {model['personalization_degree']:.3f}) over "
        f"{int(model['personalization_pairs'])} user pairs sharing a query"
    )
    if "served" in report:
        from upper_fast_train.served import served_table

        print("\n" + served_table(systems["model"], report["served"], min(ks), label))
    if "channels" in report:
        from upper_fast_train.fusion import channels_table

        print("\n" + channels_table(report["channels"], label))
    if "homedepot_dev" in report:
        hd = report["homedepot_dev"]
        print("\nHome Depot dev (real judgments, signed-out queries):")
        print("| R@10 | R@100 | R@1000 | nDCG@10 | queries |\n|---|---|---|---|---|")
        print(f"| {hd['R@10']:.3f} | {hd['R@100']:.3f} | {hd['R@1000']:.3f} | {hd['nDCG@10']:.3f} | {int(hd['queries'])} |")
    return 0


def _homedepot(run: Any, root: Path, progress: bool) -> dict[str, float]:
    import numpy as np

    from upper_fast_train.realdata import load_homedepot
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


def _check_bundle_windows(bundle: Path, windows: Any) -> None:
    """A ValueError when the bundle fitted its boosting, thresholds and ef on other windows than these."""
    from upper_fast.bundle import read_manifest

    fitted = read_manifest(bundle).get("windows")
    if fitted is None:
        raise ValueError(f"{bundle} does not record the windows it was fitted on: re-export it with this version "
                         "(`upper-fast export RUN BUNDLE --data DATA --overwrite`)")
    if (int(fitted["train_end"]), int(fitted["valid_end"])) != (windows.train_end, windows.valid_end):
        raise ValueError(f"{bundle} was fitted on windows train_end={fitted['train_end']}, valid_end="
                         f"{fitted['valid_end']}, but this evaluation uses train_end={windows.train_end}, "
                         f"valid_end={windows.valid_end}: pass the same --train-end/--valid-end as the export")
