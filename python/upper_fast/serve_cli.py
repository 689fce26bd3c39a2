"""Serving subcommands: export, search, info, demo.

`search` and `info` need only the serving package; `export` and `demo` need the [train] extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from upper_fast.data.windows import add_window_arguments, window_arguments

__all__ = ["add_commands"]


def _need_train() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError("this command needs the training side: pip install upper_fast[train]") from None


def _cmd_export(args: argparse.Namespace) -> int:
    _need_train()
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
    if vectors is None and args.workers > 1:
        vectors = _encode_with_workers(args, dataset)
    manifest = export_bundle(args.run, args.bundle, dataset, index_dtype=args.index_dtype, scale=args.scale,
                             boost_trials=args.boost_trials, mips_augment=not args.no_mips,
                             ef_search=args.ef, batch_size=args.batch_size, product_vectors=vectors,
                             overwrite=args.overwrite, progress=not args.no_progress, seed=args.seed,
                             ef_by=args.ef_by, ef_tolerance=args.ef_tolerance, target_recall=args.target_recall,
                             calibrate=not args.no_calibrate, tier_keep=args.tier_keep,
                             negative_keep=args.negative_keep)
    _print_info(manifest, args.bundle)
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


def _print_info(manifest: dict[str, Any], bundle: str | Path) -> None:
    d = manifest["dims"]
    idx = manifest.get("index", {})
    print(f"bundle {bundle}: format v{manifest['format_version']}, upper_fast {manifest['package_version']}, "
          f"model {manifest['model_version']}{' (simulated data)' if manifest.get('simulated') else ''}")
    print(f"  products {d['n_products']:,}  users {d['n_users']:,}  query nodes {d['n_query_nodes']:,}")
    print(f"  dims: query {d['query_dim']}, graph {d['graph_dim']}, quality features {d['quality_features']}, "
          f"index {d['index_dim']}; history {d['hist_items']} products / {d['hist_queries']} queries")
    print(f"  index: {idx.get('dtype')} M={idx.get('M')} ef_construction={idx.get('ef_construction')} "
          f"ef_search={idx.get('ef_search')}; recall@100 vs exact hydrated scoring: "
          f"{'not measured' if idx.get('recall_at_100') is None else format(idx['recall_at_100'], '.4f')}")
    sel = idx.get("ef_selection") or {}
    if sel.get("by") == "served recall":
        print(f"  ef chosen by served {sel['metric']} on the {sel['window']} window: ef {sel['ef']} gives "
              f"{sel['recall']:.4f} vs {sel['reference_recall']:.4f} at ef {sel['reference_ef']} (tolerance "
              f"{sel['tolerance']}); one-thread search p50 {sel['latency_ms_p50']:.2f} ms / p99 "
              f"{sel['latency_ms_p99']:.2f} ms (at ef {sel['reference_ef']}: {sel['reference_latency_ms_p50']:.2f} / "
              f"{sel['reference_latency_ms_p99']:.2f} ms)")
    elif sel:
        print(f"  ef: {sel['by']}" + (f" ({sel['why']})" if sel.get("why") else ""))
    calib = manifest.get("thresholds_calibration") or {}
    if calib.get("calibrated"):
        neg = calib["negative"]
        tiers = ", ".join(f"{t} {calib['tiers'][t]['threshold']:.3f}" for t in ("click", "favorite", "add_to_cart", "purchase")
                          if t in calib["tiers"])
        print(f"  thresholds calibrated on {calib['events']:,} {calib['window']} events: {tiers}; negative "
              f"{neg['threshold']:.3f} keeps {neg['engagements_kept']:.1%} of engagements, cuts "
              f"{neg['impressions_cut']:.1%} of impressions")
    elif calib:
        print(f"  thresholds: as trained ({calib.get('why')})")
    if manifest.get("windows"):
        print(f"  windows: train < {manifest['windows']['train_end']} <= validation < "
              f"{manifest['windows']['valid_end']} <= test; user histories as of {manifest.get('users_as_of')}")
    split = "user_tower.onnx" in manifest["files"]
    print("  query tower: " + ("split (user_tower.onnx + query_part.onnx: user vectors cached while serving)"
                               if split else "whole tower only (query_tower.onnx on every search)"))
    lexical, fusion = manifest.get("lexical"), manifest.get("fusion") or {}
    print("  lexical: " + ("none (dense channel only)" if not lexical else
                           f"{lexical.get('engine')} BM25 over {', '.join(lexical.get('fields', []))}; fusion "
                           f"{fusion.get('method')}, {fusion.get('lexical_k')} lexical candidates per search"))
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"  files: {len(manifest['files'])}, {total / 1e6:.1f} MB, sha256 in manifest.json")


def _cmd_info(args: argparse.Namespace) -> int:
    from upper_fast.bundle import read_manifest

    manifest = read_manifest(args.bundle)
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        _print_info(manifest, args.bundle)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from upper_fast.retriever import Retriever

    retriever = Retriever.load(args.bundle, num_threads=args.threads)
    t0 = time.perf_counter()
    res = retriever.search(args.query, user=args.user, k=args.k, min_tier=args.min_tier, prune=not args.no_prune)
    ms = (time.perf_counter() - t0) * 1e3
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    print(f"{res.count} results for {args.query!r} (user {args.user or 'signed out'}) in {ms:.2f} ms")
    if res.count == 0 and not args.no_prune:
        print("  every candidate's cosine is below the pruning threshold; --no-prune shows them anyway")
    shown = _display_rows(Path(args.bundle), [hit.product_id for hit in res])
    for rank, hit in enumerate(res, 1):
        print(f"{rank:4d}  {hit.product_id:<20} score {hit.score:+.4f}  cosine {hit.cosine:+.4f}  {hit.tier_name:<12}"
              f"  {shown.get(hit.product_id, '')}")
    if not shown and res.count:
        print("  (this bundle has no display.parquet: re-export it to see titles beside the hits)")
    return 0


def _display_rows(bundle: Path, product_ids: list[str]) -> dict[str, str]:
    """product_id -> "title | category | price" from the bundle's display.parquet ({} without one)."""
    from upper_fast.bundle import DISPLAY_FILE

    path = bundle / DISPLAY_FILE
    if not path.exists() or not product_ids:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.filter(pc.is_in(table.column("product_id"), value_set=pa.array(product_ids, pa.string())))
    out: dict[str, str] = {}
    for row in table.to_pylist():
        parts = [str(row.get("title") or "")]
        if row.get("category"):
            parts.append(str(row["category"]))
        if row.get("price") is not None:
            parts.append(f"{row['price']:.2f}")
        out[str(row["product_id"])] = " | ".join(parts)
    return out


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a training run to a serving bundle (needs [train])")
    p.add_argument("run", help="training run directory (from `upper-fast train`)")
    p.add_argument("bundle", help="bundle directory to create")
    p.add_argument("--data", required=True, help="the dataset the run was trained on (dir or files)")
    p.add_argument("--index-dtype", choices=("f32", "bf16", "i8"), default="f32")
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
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--shards", type=int, default=1, help="with --shard: encode only one shard of products")
    p.add_argument("--shard", type=int, default=None)
    p.add_argument("--shard-dir", default=None, help="where shards go (default BUNDLE.shards)")
    p.add_argument("--from-shards", default=None, help="merge product vector shards from this directory")
    p.add_argument("--workers", type=int, default=1, help="encode products in this many processes")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    add_window_arguments(p)
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("search", help="search a bundle from the command line")
    p.add_argument("bundle")
    p.add_argument("query")
    p.add_argument("--user", default=None, help="a user id known to the bundle (default: signed out)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--min-tier", type=int, default=0, help="0 negative .. 4 purchase threshold to clear")
    p.add_argument("--no-prune", action="store_true", help="keep hits below the threshold of --min-tier")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_search)

    p = subparsers.add_parser("info", help="describe a bundle from its manifest (does not load the model)")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = subparsers.add_parser("demo", help="simulated marketplace -> train -> export -> search -> evaluate (needs [train])")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    _need_train()
    from upper_fast_train.demo import run_demo

    run_demo(args, out=sys.stdout)
    return 0
