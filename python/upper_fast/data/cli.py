"""`upper-fast generate` (simulated marketplace) and `upper-fast validate` (input checks)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from upper_fast.data.simulate import DEFAULT_SIZES

    gen = subparsers.add_parser(
        "generate", help="write a simulated marketplace (catalog, users, search log, ground truth)",
        description="Write a SIMULATED marketplace: catalog.parquet, users.parquet, search_log.parquet, "
                    "dataset.json and the ground truth behind them.",
    )
    gen.add_argument("out", help="output directory")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--products", type=int, default=DEFAULT_SIZES["n_products"])
    gen.add_argument("--users", type=int, default=DEFAULT_SIZES["n_users"])
    gen.add_argument("--queries", type=int, default=DEFAULT_SIZES["n_queries"])
    gen.add_argument("--events", type=int, default=DEFAULT_SIZES["n_events"], help="search log rows (about)")
    gen.add_argument("--scale", type=float, default=1.0,
                     help="multiply products, users and events (queries by sqrt); 200 = 1M products")
    gen.add_argument("--measure", action="store_true", help="also print the measured properties of the world")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=_generate)

    val = subparsers.add_parser(
        "validate", help="check a dataset directory; quarantine bad rows with their reason",
        description="Validate catalog, users and search_log files (Parquet, CSV or JSONL). Every row is "
                    "accepted or quarantined; the counts reconcile exactly.",
    )
    val.add_argument("data", help="dataset directory")
    val.add_argument("--config", help="column-mapping config (JSON file)")
    val.add_argument("--quarantine", metavar="DIR", help="write rejected rows to DIR/<table>.quarantine.jsonl")
    val.add_argument("--accepted", metavar="DIR", help="write accepted rows to DIR/<table>.parquet (streaming)")
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    val.add_argument("--no-progress", action="store_true")
    val.set_defaults(func=_validate)


def _generate(args: argparse.Namespace) -> int:
    from upper_fast.data.simulate import generate, measure_world

    meta = generate(args.out, seed=args.seed, n_products=args.products, n_users=args.users,
                    n_queries=args.queries, n_events=args.events, scale=args.scale,
                    progress=not args.no_progress)
    sizes = meta["sizes"]
    print(f"simulated marketplace written to {args.out} in {meta['seconds']:.1f} s: "
          f"{sizes['products']} products, {sizes['users']} users, {sizes['queries']} queries, "
          f"{sizes['log_rows']} log rows ({', '.join(f'{k}={v}' for k, v in meta['interaction_counts'].items())}); "
          f"train_end={meta['train_end']}")
    if args.measure:
        print("measured properties (simulated):")
        print(json.dumps(measure_world(args.out), indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    import json as _json
    from pathlib import Path

    from upper_fast.data.validate import validate_dataset

    meta_path = Path(args.data) / "dataset.json"
    simulated = False
    if meta_path.is_file():
        try:
            simulated = bool(_json.loads(meta_path.read_text(encoding="utf-8")).get("simulated", False))
        except ValueError:
            simulated = False
    _, report = validate_dataset(args.data, args.config, args.quarantine, progress=not args.no_progress,
                                 simulated=simulated, accepted_dir=args.accepted, keep_log=False)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
    return 0 if report.quarantined == 0 else 1
