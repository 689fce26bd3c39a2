"""`upper-fast train-interactions DATA RUN` and `upper-fast export-interactions RUN BUNDLE`: item-interaction
vectors (upper_fast_train.item_interactions) and their recommendations bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from upper_fast.data.windows import add_window_arguments, window_arguments
from upper_fast.recommender import DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_M, TOKEN_TYPES

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "train-interactions", help="learn item-interaction vectors from shopper sessions into a run directory",
        description="Skip-gram over (product, interaction) session tokens with typed negatives and title subwords, "
        "on the dataset's train window (every event when it has no train_end); writes RUN/config.json, vectors.npz, "
        "metrics.json. docs/recommendations.md.")
    p.add_argument("data", help="dataset directory (as `upper-fast generate` writes, or your own logs)")
    p.add_argument("run", help="output run directory")
    p.add_argument("--config", help="JSON file of ItemInteractionConfig fields; the flags below override it")
    p.add_argument("--dim", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--window", type=int)
    p.add_argument("--batch-size", type=int, help="about this many pairs per native call (progress and Ctrl-C between calls)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="SGD threads (default: all cores)")
    p.add_argument("--engagement-log", action="append", default=[], metavar="PARQUET",
                   help="another engagement log in the search log's schema (timestamp, user_id, product_id, "
                   "interaction), merged into the sessions; repeatable")
    add_window_arguments(p)
    p.add_argument("--no-typed-negatives", action="store_true", help="ablation: plain skip-gram, random negatives only")
    p.add_argument("--no-subwords", action="store_true", help="no title subwords (products outside the sessions get no vector)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("export-interactions", help="write a recommendations bundle from an item-interactions run",
                              description="One upper_fast.Index per interaction type over the run's vectors, "
                              "checksummed, written atomically.")
    p.add_argument("run", help="run directory of `upper-fast train-interactions`")
    p.add_argument("bundle", help="output bundle directory, or a search bundle (`upper-fast export`): the "
                   "recommendations then go to its recommendations/ folder")
    p.add_argument("--M", type=int, default=DEFAULT_M, help=f"HNSW degree (default {DEFAULT_M})")
    p.add_argument("--ef-construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    p.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH)
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from upper_fast.data import load_dataset
    from upper_fast_train.item_interactions import ItemInteractionConfig, train_interactions

    given = json.loads(Path(args.config).read_text()) if args.config else {}
    if not isinstance(given, dict):
        raise ValueError(f"{args.config} must hold a JSON object of ItemInteractionConfig fields")
    flags = {"dim": args.dim, "epochs": args.epochs, "window": args.window, "batch_size": args.batch_size,
             "lr": args.lr, "seed": args.seed, "num_threads": args.threads}
    given.update({k: v for k, v in flags.items() if v is not None})
    if args.no_typed_negatives:
        given["typed_negatives"] = False
    if args.no_subwords:
        given["subwords"] = False
    if args.no_progress:
        given["progress"] = False
    config = ItemInteractionConfig.from_dict(given)
    extra = []
    for path in args.engagement_log:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--engagement-log {path}: no such file (a Parquet file in the search log's schema)")
        extra.append(pq.read_table(path))
    dataset = load_dataset(args.data, progress=config.progress, **window_arguments(args))
    metrics = train_interactions(dataset, args.run, config, extra_logs=tuple(extra))
    print(f"trained item-interaction vectors on {metrics['sessions']} sessions ({metrics['tokens']} tokens, "
          f"{metrics['vocabulary']} (product, interaction) vectors) in {sum(metrics['epoch_seconds']):.1f} s "
          f"({metrics['tokens_per_second']:.0f} tokens/s); run written to {args.run}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from upper_fast.recommender import recommendations_dir
    from upper_fast_train.item_interactions import export_interactions

    manifest = export_interactions(args.run, args.bundle, overwrite=args.overwrite, M=args.M,
                                   ef_construction=args.ef_construction, ef_search=args.ef_search)
    counts = ", ".join(f"{t} {manifest['dims'][f'n_{t}']}" for t in TOKEN_TYPES)
    where = recommendations_dir(args.bundle)
    print(f"recommendations bundle written to {where}: {counts} vectors (dim {manifest['dims']['dim']}; "
          f"HNSW M {manifest['index']['M']}, ef_construction {manifest['index']['ef_construction']}, "
          f"ef_search {manifest['index']['ef_search']})")
    return 0
