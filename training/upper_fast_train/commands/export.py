"""`upper-fast export RUN BUNDLE` (a training run to a serving bundle) and `upper-fast demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from upper_fast.data.windows import add_window_arguments, window_arguments
from upper_fast.serve_cli import print_info

__all__ = ["add_commands"]


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a training run to a serving bundle")
    p.add_argument("run", help="training run directory (from `upper-fast train`)")
    p.add_argument("bundle", help="bundle directory to create")
    p.add_argument("--data", required=True, help="the dataset the run was trained on (dir or files)")
    p.add_argument("--index-dtype", choices=("f32", "bf16", "i8"), default="i8",
                   help="how the index stores vectors for the graph walk: i8 (default; the walk's candidates are "
                   "re-ranked on the float32 hydrated vectors, so scores are exact), bf16, or f32 (no re-rank)")
    p.add_argument("--scale", type=float, default=0.1, help="quality feature scale in the hydrated vectors")
    p.add_argument("--boost-trials", type=int, default=40, help="Optuna TPE trials for the boosting weights")
    p.add_argument("--no-mips", action="store_true", help="index [v; scale*f] without the MIPS-to-cosine column")
    p.add_argument("--ef", type=int, default=128, help="ef at search time with --ef-by fixed; the start for --ef-by ann")
    p.add_argument("--ef-by", choices=("served", "ann", "fixed"), default="served",
                   help="served (default): the smallest ef whose served recall@100 on the validation window is "
                   "within --ef-tolerance of a near-exact reference; ann: raise --ef until the ANN recall@100 "
                   "against exact hydrated scoring reaches --target-recall; fixed: --ef as given")
    p.add_argument("--ef-tolerance", type=float, default=0.005, help="absolute recall loss allowed (default 0.005)")
    p.add_argument("--target-recall", type=float, default=0.99, help="ANN recall target of --ef-by ann")
    p.add_argument("--no-calibrate", action="store_true", help="keep the trained hinge thresholds")
    p.add_argument("--tier-keep", type=float, default=0.5,
                   help="each tier's threshold keeps this share of its validation events (default 0.5)")
    p.add_argument("--negative-keep", type=float, default=0.99,
                   help="the pruning threshold keeps this share of validation engagements (default 0.99)")
    p.add_argument("--lexical", action="store_true",
                   help="also build the lexical channel (a tantivy BM25 index over the catalogue text) and fit its "
                   "fusion with the dense channel on the validation window (hybrid retrieval; docs/serving.md)")
    p.add_argument("--lexical-k", type=int, default=100, help="lexical candidates per hybrid search (default 100)")
    p.add_argument("--no-product-tower", action="store_true",
                   help="leave out the product tower ONNX (the served Retriever then cannot upsert products)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--shards", type=int, default=1, help="with --shard: encode only one shard of products")
    p.add_argument("--shard", type=int, default=None)
    p.add_argument("--shard-dir", default=None, help="where shards go (default BUNDLE.shards)")
    p.add_argument("--from-shards", default=None, help="merge product vector shards from this directory")
    p.add_argument("--workers", type=int, default=1, help="encode products in this many processes (with --ray: "
                   "encoder actors)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="encode products on Ray Data (needs upper-fast-train[scale]): alone, a local Ray runtime "
                   "with --workers CPUs; with ADDRESS (HOST:PORT, ray://HOST:PORT or auto), that cluster")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    add_window_arguments(p)
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("demo", help="simulated marketplace -> train -> export -> search -> evaluate")
    p.add_argument("--out", default="upper_fast_demo", help="working directory for data, run and bundle")
    p.add_argument("--products", type=int, default=None, help="catalogue size (default: the generator's)")
    p.add_argument("--users", type=int, default=None, help="number of users (default: the generator's)")
    p.add_argument("--events", type=int, default=None, help="search-log events (default: the generator's)")
    p.add_argument("--queries", type=int, default=None, help="distinct queries (default: the generator's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's)")
    p.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps")
    p.add_argument("--small-model", action="store_true", help="the tiny preset (dims 64, small T5 without pre-training) instead of logs, for a quick run")
    p.add_argument("--boost-trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_export(args: argparse.Namespace) -> int:
    from upper_fast.data import load_dataset
    from upper_fast_train.export import encode_product_shard, export_bundle, merge_product_shards

    dataset = load_dataset(args.data, progress=not args.no_progress, **window_arguments(args))
    if args.shards > 1 and args.shard is not None:
        from upper_fast_train import load_run

        run = load_run(args.run, dataset)
        path = encode_product_shard(run, dataset.catalog, args.shards, args.shard, args.shard_dir or Path(args.bundle).with_suffix(".shards"),
                                    batch_size=args.batch_size)
        print(f"wrote {path}; after all {args.shards} shards: upper-fast export {args.run} {args.bundle} --data {args.data} "
              f"--from-shards {path.parent}")
        return 0
    vectors = merge_product_shards(args.from_shards, dataset.catalog.num_rows) if args.from_shards else None
    if args.ray is not None:
        if vectors is not None:
            raise ValueError("--ray encodes the products; --from-shards reads encoded ones: pass one of them")
        vectors = _encode_with_ray(args, dataset)
    elif vectors is None and args.workers > 1:
        vectors = _encode_with_workers(args, dataset)
    manifest = export_bundle(args.run, args.bundle, dataset, index_dtype=args.index_dtype, scale=args.scale,
                             boost_trials=args.boost_trials, mips_augment=not args.no_mips,
                             ef_search=args.ef, batch_size=args.batch_size, product_vectors=vectors,
                             overwrite=args.overwrite, progress=not args.no_progress, seed=args.seed,
                             ef_by=args.ef_by, ef_tolerance=args.ef_tolerance, target_recall=args.target_recall,
                             calibrate=not args.no_calibrate, tier_keep=args.tier_keep,
                             negative_keep=args.negative_keep, lexical=args.lexical, lexical_k=args.lexical_k,
                             product_tower=not args.no_product_tower)
    print_info(manifest, args.bundle)
    return 0


def _encode_shard_worker(job: tuple[str, str, int, int, str, int]) -> str:
    import torch

    from upper_fast.data import load_dataset
    from upper_fast_train import load_run
    from upper_fast_train.export import encode_product_shard

    run_dir, data, shards, shard, out, batch_size = job
    torch.set_num_threads(1)
    dataset = load_dataset(data, progress=False)
    return str(encode_product_shard(load_run(run_dir, dataset), dataset.catalog, shards, shard, out, batch_size))


def _encode_with_workers(args: argparse.Namespace, dataset: Any) -> Any:
    """Product encoding split over a process pool (one torch thread each), then merged."""
    import multiprocessing as mp
    import tempfile

    from upper_fast_train.export import merge_product_shards

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(str(args.run), str(args.data), args.workers, i, tmp, args.batch_size) for i in range(args.workers)]
        with mp.get_context("spawn").Pool(args.workers) as pool:
            pool.map(_encode_shard_worker, jobs)
        return merge_product_shards(tmp, dataset.catalog.num_rows)


def _encode_with_ray(args: argparse.Namespace, dataset: Any) -> Any:
    """Product encoding on Ray Data (`upper_fast_train.ray_encode`): shards into --shard-dir (default a
    temporary folder), then merged."""
    import tempfile

    from upper_fast_train.export import merge_product_shards
    from upper_fast_train.ray_encode import encode_catalogue_ray

    if args.shard is not None:
        raise ValueError("--ray encodes every shard itself: drop --shards/--shard")
    address = None if args.ray == "local" else args.ray
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.shard_dir) if args.shard_dir else Path(tmp)
        report = encode_catalogue_ray(args.run, dataset.catalog, out, address=address, workers=args.workers,
                                      batch_size=args.batch_size, progress=not args.no_progress)
        print(f"encoded {report['products']:,} products on Ray ({report['address']}, {report['workers']} workers) in "
              f"{report['seconds']:.1f} s: {report['products_per_s']:,.0f} products/s; {len(report['shards'])} shards"
              + (f" in {out}" if args.shard_dir else ""), file=sys.stderr)
        return merge_product_shards(out, dataset.catalog.num_rows)


def _cmd_demo(args: argparse.Namespace) -> int:
    from upper_fast_train.demo import run_demo

    run_demo(args, out=sys.stdout)
    return 0
