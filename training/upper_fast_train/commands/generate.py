"""`upper-fast generate OUT`: write a SIMULATED marketplace (upper_fast_train.simulate)."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from upper_fast_train.simulate import DEFAULT_SIZES

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


def _generate(args: argparse.Namespace) -> int:
    from upper_fast_train.simulate import generate, measure_world

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
