"""Serving subcommands: search, info, push-milvus (torch-free)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


__all__ = ["add_commands", "print_info"]


def print_info(manifest: dict[str, Any], bundle: str | Path) -> None:
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
        curves = sel.get("segment_curves") or {}
        held = [f"{s} {dict(map(tuple, c))[sel['ef']]:.4f} vs {dict(map(tuple, c))[sel['reference_ef']]:.4f}"
                for s, c in curves.items() if sel["ef"] in dict(map(tuple, c))]
        if held:
            new = sel.get("as_new_queries_requests")
            print(f"    also within the tolerance: {', '.join(held)}"
                  + (f" (as_new_queries: {new:,} known-query requests searched without their graph node)" if new else ""))
        for g in sel.get("graphs", []):
            print(f"    graph M {g['M']} / ef_construction {g['ef_construction']}: ef {g['ef']}, recall {g['recall']:.4f}, "
                  f"p99 {g['latency_ms_p99']:.2f} ms")
        if sel.get("graph"):
            print(f"    kept: {sel['graph']}")
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
    parity = manifest.get("product_tower_parity_max_abs")
    print("  product tower: " + (f"product_tower.onnx (live upserts; ONNX vs PyTorch max |diff| {parity:.1e})"
                                 if "product_tower.onnx" in manifest["files"] else
                                 "none (re-export with a current `upper-fast export` to upsert products)"))
    live = manifest.get("live")
    if live:
        print(f"  saved live state: {live.get('products_upserted', 0):,} upserts, {live.get('products_removed', 0):,} "
              f"products removed, {live.get('users_observed', 0):,} users with observed events")
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
        print_info(manifest, args.bundle)
    return 0


def _cmd_push_milvus(args: argparse.Namespace) -> int:
    from upper_fast.milvus import push_to_milvus

    fields = None
    if args.fields:
        path = Path(args.fields)
        if not path.is_file():
            raise FileNotFoundError(f"--fields {path} does not exist")
        if path.suffix.lower() == ".csv":
            import pyarrow as pa
            import pyarrow.csv as pcsv

            fields = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"product_id": pa.string()}))
        else:
            import pyarrow.parquet as pq

            fields = pq.read_table(path)
    summary = push_to_milvus(args.bundle, args.uri, args.collection, fields=fields, token=args.token,
                             overwrite=args.overwrite, index_type=args.index)
    extra = ", ".join(f"{k} ({v})" for k, v in summary["fields"].items()) or "none"
    print(f"pushed {summary['rows']:,} products of {summary['model_version']} to {args.uri} collection "
          f"{summary['collection']!r} in {summary['seconds']:.1f} s: vectors of width {summary['dim']}, metric IP, "
          f"index {summary['index']['type']}; filterable fields: {extra}")
    print(f"serve it: Retriever.load({str(args.bundle)!r}, backend=MilvusBackend({args.uri!r}"
          + (f", collection={summary['collection']!r}" if args.collection else "") + "))")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from upper_fast.retriever import Retriever

    backend = None
    if args.milvus:
        from upper_fast.milvus import MilvusBackend

        backend = MilvusBackend(args.milvus, collection=args.collection)
    elif args.filter or args.collection:
        raise ValueError("--filter and --collection are for a Milvus-served search: pass --milvus URI too")
    retriever = Retriever.load(args.bundle, num_threads=args.threads, backend=backend)
    if args.max_postings is not None:
        if not retriever.has_lexical:
            raise ValueError(f"--max-postings bounds the lexical channel, and {args.bundle} has none "
                             "(export with --lexical to add it)")
        retriever.lexical_max_postings = None if args.max_postings.lower() == "none" else _positive_int(
            args.max_postings, "--max-postings")
    lexical = False if (args.filter or args.dense_only) else None
    t0 = time.perf_counter()
    res = retriever.search(args.query, user=args.user, k=args.k, min_tier=args.min_tier, prune=not args.no_prune,
                           filter=args.filter or None, lexical=lexical, lexical_k=args.lexical_k)
    ms = (time.perf_counter() - t0) * 1e3
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    how = f"fused by {res.fusion}" if res.fusion else "dense"
    print(f"{res.count} results for {args.query!r} (user {args.user or 'signed out'}; {how}) in {ms:.2f} ms")
    if res.count == 0 and not args.no_prune:
        print("  every candidate's cosine is below the pruning threshold; --no-prune shows them anyway")
    shown = _display_rows(Path(args.bundle), [hit.product_id for hit in res])
    hybrid = res.channels is not None
    for rank, hit in enumerate(res, 1):
        found = f"  {'+'.join(sorted(hit.channels)):<13}" if hybrid else ""
        print(f"{rank:4d}  {hit.product_id:<20} score {hit.score:+.4f}  cosine {hit.cosine:+.4f}  {hit.tier_name:<12}"
              f"{found}  {shown.get(hit.product_id, '')}")
    if not shown and res.count:
        print("  (this bundle has no display.parquet: re-export it to see titles beside the hits)")
    return 0


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{flag} must be a positive number of postings or 'none', got {text!r}")
    return value


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
    p = subparsers.add_parser("search", help="search a bundle from the command line")
    p.add_argument("bundle")
    p.add_argument("query")
    p.add_argument("--user", default=None, help="a user id known to the bundle (default: signed out)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--min-tier", type=int, default=0, help="0 negative .. 4 purchase threshold to clear")
    p.add_argument("--no-prune", action="store_true", help="keep hits below the threshold of --min-tier")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--dense-only", action="store_true", help="on a bundle with a lexical index: the dense channel alone")
    p.add_argument("--lexical-k", type=int, default=None,
                   help="lexical candidates per search (default: the bundle's fusion.json, 100)")
    p.add_argument("--max-postings", default=None, metavar="N",
                   help="bound on the lexical query's work in postings, or 'none' (default 100,000)")
    p.add_argument("--milvus", metavar="URI", default=None,
                   help="search the bundle's vectors in Milvus (after push-milvus; needs upper_fast[scale])")
    p.add_argument("--collection", default=None, help="with --milvus: the collection (default: the bundle's)")
    p.add_argument("--filter", default=None, metavar="EXPR",
                   help="with --milvus: a Milvus filter expression, e.g. \"category == 'jewelry' and price < 50\"")
    p.set_defaults(func=_cmd_search)

    p = subparsers.add_parser("push-milvus", help="write a bundle's hydrated product vectors into a Milvus collection",
                              description="Write BUNDLE's hydrated product vectors, boosts and filterable fields "
                              "(category, price, and the columns of --fields) into a Milvus collection (metric IP, "
                              "HNSW), for Retriever.load(BUNDLE, backend=MilvusBackend(URI)). Needs upper_fast[scale].")
    p.add_argument("bundle")
    p.add_argument("uri", help="a Milvus server (http://HOST:19530) or a Milvus Lite file (PATH.db)")
    p.add_argument("--collection", default=None, help="collection name (default: upper_fast_<model version>)")
    p.add_argument("--fields", default=None, metavar="FILE",
                   help="a Parquet or CSV table with product_id and scalar columns to filter on (shop_country, "
                   "in_stock, ...): one row per bundle product")
    p.add_argument("--index", choices=("HNSW", "FLAT"), default="HNSW",
                   help="HNSW (default; M and efConstruction of the bundle's index) or FLAT (exact)")
    p.add_argument("--token", default="", help="Milvus token (user:password or an API key)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing collection of that name")
    p.set_defaults(func=_cmd_push_milvus)

    p = subparsers.add_parser("info", help="describe a bundle from its manifest (does not load the model)")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
