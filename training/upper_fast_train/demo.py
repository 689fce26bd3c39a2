"""`upper-fast demo`: simulated marketplace -> train -> export -> search -> evaluate, in one command.

Everything printed comes from the run it makes; the data are SIMULATED (labelled so in the output).
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

__all__ = ["pick_contrasting_users", "run_demo"]


def pick_contrasting_users(bundle: Path, catalog: Any) -> tuple[str, str, str, str]:
    """Two signed-in users with the longest histories whose dominant categories differ.

    Returns (user_a, category_a, user_b, category_b).
    """
    import pyarrow.parquet as pq

    users = pq.read_table(bundle / "users.parquet").to_pylist()
    categories = catalog.column("category").to_pylist() if "category" in catalog.column_names else [""] * catalog.num_rows
    ranked = sorted(users, key=lambda u: -len(u["hist_rows"]))
    tastes = []
    for u in ranked:
        if not u["hist_rows"]:
            break
        top = Counter(categories[r] for r in u["hist_rows"]).most_common(1)[0][0]
        tastes.append((u["user_id"], top))
    if len(tastes) < 2:
        raise ValueError("the simulated log has fewer than two users with history; generate more events")
    a = tastes[0]
    b = next((t for t in tastes[1:] if t[1] != a[1]), tastes[1])
    return a[0], a[1], b[0], b[1]


def _example_queries(dataset: Any, count: int) -> list[str]:
    """The most frequent short queries of the log (broad queries show personalisation best)."""
    freq = Counter(q for q in dataset.log.column("query").to_pylist() if q and len(q.split()) <= 2)
    return [q for q, _ in freq.most_common(count)]


def _title(catalog_titles: dict[str, str], pid: str, width: int) -> str:
    t = catalog_titles.get(pid, pid)
    return (t[: width - 1] + "…") if len(t) > width else t


def run_demo(args: argparse.Namespace, out: TextIO) -> dict[str, Any]:
    """Run the demo with the CLI's arguments; prints as it goes and returns the figures."""
    from upper_fast import Retriever
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate

    from upper_fast_train import TrainConfig, load_run, train
    from upper_fast_train.baselines import bm25_baseline
    from upper_fast_train.served import evaluate_served, served_table
    from upper_fast_train.evaluate import evaluate_run
    from upper_fast_train.export import export_bundle

    root = Path(args.out)
    progress = not args.no_progress
    timings: dict[str, float] = {}
    say = lambda s="": print(s, file=out, flush=True)  # noqa: E731
    say(f"upper-fast demo: SIMULATED marketplace -> train -> export -> search -> evaluate, in {root}")

    t0 = time.perf_counter()
    sizes = {k: v for k, v in (("n_products", args.products), ("n_users", args.users), ("n_events", args.events),
                               ("n_queries", args.queries)) if v}
    generate(root / "data", seed=args.seed, progress=progress, **sizes)
    dataset = load_dataset(root / "data", progress=progress)
    timings["generate"] = time.perf_counter() - t0
    say(f"[1/5] generated (simulated): {dataset.catalog.num_rows:,} products, {dataset.log.num_rows:,} log rows "
        f"({timings['generate']:.1f} s)")
    say(f"      windows: {dataset.windows.describe()}")

    t0 = time.perf_counter()
    overrides = {"seed": args.seed, "progress": progress}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    preset = "tiny" if args.small_model else "logs"  # logs: what `upper-fast train` picks for this data
    train(dataset, root / "run", TrainConfig.preset(preset, **overrides))
    timings["train"] = time.perf_counter() - t0
    say(f"[2/5] trained (preset {preset!r}) -> {root / 'run'} ({timings['train']:.1f} s)")

    t0 = time.perf_counter()
    manifest = export_bundle(root / "run", root / "bundle", dataset, boost_trials=args.boost_trials,
                             overwrite=True, progress=progress, seed=args.seed)
    timings["export"] = time.perf_counter() - t0
    hyd = json.loads((root / "bundle" / "hydration.json").read_text())["tuning"]
    say(f"[3/5] exported bundle -> {root / 'bundle'} ({timings['export']:.1f} s); ONNX parity max |diff| "
        f"{manifest['onnx_parity_max_abs']:.1e}; ANN recall@100 on hydrated vectors {manifest['index']['recall_at_100']:.4f}")
    sel = manifest["index"].get("ef_selection") or {}
    if sel.get("by") == "served recall":
        say(f"      ef {sel['ef']} chosen on the validation window: served {sel['metric']} {sel['recall']:.4f} vs "
            f"{sel['reference_recall']:.4f} at ef {sel['reference_ef']}; p99 {sel['latency_ms_p99']:.2f} ms")
    calib = manifest.get("thresholds_calibration") or {}
    if calib.get("calibrated"):
        say("      thresholds calibrated on validation: " + ", ".join(
            f"{t} {calib['tiers'][t]['threshold']:.2f}" for t in ("click", "favorite", "add_to_cart", "purchase"))
            + f"; pruning below {calib['negative']['threshold']:.2f}")
    if "heldout_gain" in hyd:
        say(f"      boosting ({hyd['target']} recall@{hyd['k']}, simulated): held-out {hyd['heldout_recall_zero']:.4f} -> "
            f"{hyd['heldout_recall_learned']:.4f} (gain {hyd['heldout_gain']:+.4f}); kept {hyd['kept']} weights")

    retriever = Retriever.load(root / "bundle")
    user_a, cat_a, user_b, cat_b = pick_contrasting_users(root / "bundle", dataset.catalog)
    titles = dict(zip(map(str, dataset.catalog.column("product_id").to_pylist()), dataset.catalog.column("title").to_pylist()))
    width = 44
    say(f"[4/5] search, side by side (simulated): {user_a} (mostly {cat_a}) vs {user_b} (mostly {cat_b})")
    candidates = _example_queries(dataset, 20)

    def shared_top5(query: str) -> int:
        a = retriever.search(query, user=user_a, k=5, prune=False)
        b = retriever.search(query, user=user_b, k=5, prune=False)
        return len(set(a.product_ids) & set(b.product_ids))

    showcase = sorted(candidates, key=shared_top5)[:3]  # stable: ties keep the more searched query
    say(f"  (chosen: the 3 of the log's {len(candidates)} most searched short queries where these two users' "
        "top 5 differ most)")
    latencies = []
    for query in showcase:
        say(f"  query {query!r}")
        say(f"    {'user ' + user_a:<{width + 6}}  {'user ' + user_b}")
        t1 = time.perf_counter()
        ra = retriever.search(query, user=user_a, k=5, prune=False)
        latencies.append(time.perf_counter() - t1)
        rb = retriever.search(query, user=user_b, k=5, prune=False)
        for i in range(5):
            left = f"{_title(titles, ra.product_ids[i], width):<{width}} {ra.cosines[i]:.2f}" if i < ra.count else ""
            right = f"{_title(titles, rb.product_ids[i], width):<{width}} {rb.cosines[i]:.2f}" if i < rb.count else ""
            say(f"    {left:<{width + 6}}  {right}")
        overlap = len(set(ra.product_ids) & set(rb.product_ids))
        say(f"    top-5 overlap between the two users: {overlap}/5")

    t0 = time.perf_counter()
    run = load_run(root / "run", dataset)
    metrics = evaluate_run(run, dataset, progress=progress)
    blanked = evaluate_run(run, dataset, progress=progress, personalized=False)
    lexical = bm25_baseline(dataset, progress=progress)
    timings["evaluate"] = time.perf_counter() - t0
    say(f"[5/5] quality on the test window (SIMULATED data; exact search over the catalogue) "
        f"({timings['evaluate']:.1f} s)")
    say("    | metric (SIMULATED) | model | model, user features blanked | BM25 (bm25s) |")
    say("    |---|---|---|---|")
    for name, value in metrics.items():
        if isinstance(value, float) and not name.startswith("requests") and name != "simulated":
            cells = [f"{t[name]:.4f}" if isinstance(t.get(name), float) else "-" for t in (blanked, lexical)]
            say(f"    | {name} | {value:.4f} | {cells[0]} | {cells[1]} |")
    say(f"    personalisation over the whole window: mean Kendall tau {metrics['kendall_tau_mean']:.3f} between "
        f"users' rankings of a shared query (1 = everyone ranked alike; degree {metrics['personalization_degree']:.3f}, "
        f"{int(metrics['personalization_pairs'])} user pairs)")
    t0 = time.perf_counter()
    served = evaluate_served(root / "bundle", dataset, progress=progress)
    timings["evaluate"] += time.perf_counter() - t0
    say(textwrap.indent(served_table(metrics, served, 100, "SIMULATED"), "    "))
    timings["total"] = sum(timings.values())
    say(f"done in {timings['total']:.0f} s (generate {timings['generate']:.0f}, train {timings['train']:.0f}, "
        f"export {timings['export']:.0f}, evaluate {timings['evaluate']:.0f}); "
        f"try: upper-fast search {root / 'bundle'} \"{_example_queries(dataset, 1)[0]}\" --user {user_a}")
    return {"timings": timings, "metrics": metrics, "metrics_user_blanked": blanked, "metrics_bm25": lexical,
            "served": served, "boosting": hyd, "manifest": manifest}
