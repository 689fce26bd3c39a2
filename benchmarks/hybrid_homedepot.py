"""Hybrid retrieval on Home Depot dev (REAL judged data): dense only, BM25 only (the bundle's lexical
channel), RRF and the learned fusion, overall and per query-length bucket (docs/serving.md "Hybrid
retrieval").

    python benchmarks/hybrid_homedepot.py RUN BUNDLE [--data ../shared/data] [--out result.json]
        [--k 100] [--lexical-k 100] [--max-postings N|none] [--rebuild]

RUN is a Home Depot training run (benchmarks/train_homedepot.py, e.g. `--preset relevance`). BUNDLE is
written from it when absent (or with --rebuild), as `export_bundle` would, with what Home Depot lacks
left neutral: one constant quality column (boost weight 0), no users, the run's hinge thresholds with the
negative one at -1 (nothing pruned: the judged evaluation ranks without pruning), an f32 index at ef 400. Its lexical channel
indexes the catalogue titles, and its learned fusion is fitted on the judged TRAIN split (graded
labels: (relevance - 1) / 2 on judged products, 0 elsewhere), never on dev. Every system ranks the
same served candidates (`Retriever.fusion_candidates`: the dense channel's k hits and the lexical
channel's lexical_k). The real data is read in place and never copied. --max-postings sets the lexical
channel's bound on a dev query's work (default: the bundle's default, `DEFAULT_MAX_POSTINGS`); e.g.
5467 bounds these 54,667 products as 100,000 bounds 1M (the same share of the catalogue).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def judged_labels(judged: Any) -> list[dict[int, float]]:
    """Graded labels per query: (relevance - 1) / 2 in [0, 1] on judged rows (Home Depot grades 1-3)."""
    return [{int(r): max(float(g) - 1.0, 0.0) / 2.0 for r, g in zip(rows, rel)}
            for rows, rel in zip(judged.rows, judged.relevance)]


def build_bundle(run_dir: Path, bundle: Path, data: Path, k: int, lexical_k: int) -> dict[str, Any]:
    """Export RUN to BUNDLE with the lexical channel and a fusion fitted on the judged train split."""
    import dataclasses

    import pyarrow as pa
    import torch

    from upper_fast.bundle import write_bundle
    from upper_fast_train.realdata import load_homedepot
    from upper_fast.lexical import catalogue_texts
    from upper_fast_train import load_run
    from upper_fast_train.evaluate import Judgments
    from upper_fast_train.export import (check_onnx_parity, export_query_tower, export_split_towers,
                                         parity_inputs)
    from upper_fast_train.fusion import collect_candidates, fit_fusion

    torch.set_num_threads(1)
    train, train_table = load_homedepot(data, "train")
    catalog = train.catalog
    run = load_run(run_dir)
    tc = run.train_config
    product_ids = [str(p) for p in catalog.column("product_id").to_pylist()]
    t0 = time.perf_counter()
    vectors = np.ascontiguousarray(run.encode_products(catalog), dtype=np.float32)
    encode_s = time.perf_counter() - t0
    train_rows = {p: i for i, p in enumerate(run.product_ids)}
    graph = np.zeros((len(product_ids), run.graph.dim), np.float32)
    known = np.array([train_rows.get(p, -1) for p in product_ids], np.int64)
    graph[known >= 0] = run.graph.product_vectors[known[known >= 0]]
    fz = dataclasses.asdict(tc.featurizer)
    countries = list(run.vocab.countries)
    N, M = tc.model.history_items, tc.model.history_queries
    example = parity_inputs(64, graph_dim=run.graph.dim, hist_items=N, hist_queries=M, query_terms=fz["max_query_terms"],
                            vocab_size=1 + fz["word_buckets"] + fz["bigram_buckets"] + fz["trigram_buckets"],
                            n_countries=len(countries))
    judged_train = Judgments.from_table(train_table, catalog.column("product_id"))
    labels = judged_labels(judged_train)

    def fit(staged: Path) -> Any:
        from upper_fast import Retriever

        r = Retriever.load(staged, verify=False)
        t = time.perf_counter()
        cands = collect_candidates(r, judged_train.queries, k=k, lexical_k=lexical_k, progress=True)
        model = fit_fusion(cands, labels, lexical_k=lexical_k,
                           report={"data": "Home Depot judged TRAIN split (REAL)", "queries": len(cands),
                                   "labels": "(relevance - 1) / 2 on judged products", "k": k,
                                   "candidates_s": time.perf_counter() - t})
        return model

    users = pa.table({"user_id": pa.array([], pa.string()), "country": pa.array([], pa.int32()),
                      "hist_rows": pa.array([], pa.list_(pa.int32())), "hist_types": pa.array([], pa.list_(pa.int8())),
                      "hist_queries": pa.array([], pa.list_(pa.string()))})
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_query_tower(run.model.query_tower, Path(tmp) / "query_tower.onnx", example)
        parity = check_onnx_parity(run.model.query_tower, onnx_path, example)
        split = export_split_towers(run.model.query_tower, Path(tmp), example)
        t0 = time.perf_counter()
        manifest = write_bundle(
            bundle, query_tower_onnx=onnx_path, split_towers_onnx=split, featurizer_config=fz,
            query_keys=[str(q) for q in run.graph.query_keys],
            query_graph=np.ascontiguousarray(run.graph.query_vectors, dtype=np.float32), product_ids=product_ids,
            product_graph=graph, product_vectors=vectors, quality=np.zeros((len(product_ids), 1), np.float32),
            hydration={"weights": [0.0], "scale": 0.1, "mips_augmented": True, "feature_names": ["none"]},
            thresholds={**json.loads((run_dir / "thresholds.json").read_text()), "negative": -1.0},
            users=users, countries=countries, hist_items=N, hist_queries=M, model_version=f"{run_dir.name}-hybrid",
            index_dtype="f32", ef_search=400, overwrite=True, lexical_texts=catalogue_texts(catalog), fusion=fit,
            display=catalog.select(["product_id", "title"]),
            extra={"simulated": False, "onnx_parity_max_abs": parity,
                   "run": {"dir": str(run_dir.resolve()), "personalized": bool(tc.model.personalized)}})
    return {"encode_products_s": encode_s, "write_bundle_s": time.perf_counter() - t0, "onnx_parity_max_abs": parity,
            "fusion": manifest["fusion"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--k", type=int, default=100, help="dense hits per query (and the cut-off of R@k)")
    parser.add_argument("--lexical-k", type=int, default=100, help="lexical candidates per query")
    parser.add_argument("--rebuild", action="store_true", help="write BUNDLE even if it exists")
    parser.add_argument("--max-postings", default=None,
                        help="the lexical channel's bound on dev queries: a number of postings or 'none' (default: the default bound)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from _machine import cpu_model

    import upper_fast
    from upper_fast import Retriever
    from upper_fast_train.realdata import load_homedepot
    from upper_fast.lexical import FusionModel
    from upper_fast_train.evaluate import Judgments
    from upper_fast_train.fusion import LENGTH_BUCKETS, SYSTEMS, collect_candidates, hybrid_eval_judged

    report: dict[str, Any] = {"data": "REAL: Home Depot dev judgments (2,306 queries over 54,667 products)",
                              "run": str(args.run), "bundle": str(args.bundle), "k": args.k, "lexical_k": args.lexical_k,
                              "machine": f"{cpu_model()} ({platform.machine()}), SIMD {upper_fast.simd_level()}"}
    if args.rebuild or not (args.bundle / "manifest.json").exists():
        report["build"] = build_bundle(args.run, args.bundle, args.data, args.k, args.lexical_k)
    retriever = Retriever.load(args.bundle)
    if args.max_postings is not None:
        retriever.stages().lexical.max_postings = None if args.max_postings.lower() == "none" else int(args.max_postings)
    report["max_postings"] = retriever.stages().lexical.max_postings
    fusion = FusionModel.load(args.bundle)
    dev, table = load_homedepot(args.data, "dev")
    judged = Judgments.from_table(table, dev.catalog.column("product_id"))
    t0 = time.perf_counter()
    cands = collect_candidates(retriever, judged.queries, k=args.k, lexical_k=args.lexical_k, progress=True)
    report["candidates_s"] = time.perf_counter() - t0
    result = hybrid_eval_judged(cands, judged, fusion, ks=(10, args.k))
    report["dev"] = result
    report["fusion"] = fusion.to_dict()
    rk = f"R@{args.k}"
    print(f"\nHome Depot dev (REAL judgments), k={args.k}, lexical_k={args.lexical_k}, "
          f"max_postings={report['max_postings']}; fusion weights "
          + ", ".join(f"{n} {w:+.3g}" for n, w in zip(fusion.features, fusion.weights)))
    print(f"| system | nDCG@10 | {rk} | " + " | ".join(f"nDCG@10 {b} words (n)" for b in LENGTH_BUCKETS) + " |")
    print("|---" * (3 + len(LENGTH_BUCKETS)) + "|")
    for system in SYSTEMS:
        if system not in result:
            continue
        r = result[system]
        cells = [f"{r[f'words {b}']['nDCG@10']:.3f} ({int(r[f'words {b}']['queries'])})" if f"words {b}" in r else "-"
                 for b in LENGTH_BUCKETS]
        print(f"| {system} | {r['all']['nDCG@10']:.3f} | {r['all'][rk]:.3f} | " + " | ".join(cells) + " |")
    best_channel = {b: max(result[s][f"words {b}"]["nDCG@10"] for s in ("dense", "lexical")) for b in LENGTH_BUCKETS}
    for system in ("rrf", "learned"):
        if system in result:
            gaps = {b: result[system][f"words {b}"]["nDCG@10"] - best_channel[b] for b in LENGTH_BUCKETS}
            report[f"{system}_minus_best_channel_nDCG@10"] = gaps
            print(f"{system} minus the better channel, nDCG@10 per bucket: "
                  + ", ".join(f"{b}: {g:+.3f}" for b, g in gaps.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
