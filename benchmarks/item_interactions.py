"""Item-interaction vectors: next add_to_cart / purchase recall on the test window, beside co-occurrence
counts and plain skip-gram, and training throughput beside gensim Word2Vec on the same sessions.

    python benchmarks/item_interactions.py --data DIR [DIR ...] [--epochs N] [--threads 2] [--repeats 1] [--out result.json]

For each dataset (train < train_end <= validation < valid_end <= test, `upper_fast.data.windows`):
train on the train window the typed model (typed negatives + title subwords, the defaults), the plain
skip-gram ablation (the same trainer and tokens, random negatives only) and two more ablations (typed
without subwords; plain without subwords, the like-for-like throughput peer of gensim); gensim
Word2Vec (skip-gram, negative 5, window 5 without shrinking, dim 100, no subsampling, same epochs and
threads) on the same sessions untyped (product ids, same token order); co-occurrence counts from the
same training sessions. Every method answers the test window's next-action requests
(`upper_fast_train.item_interactions_eval`): the most recent earlier view of another product ->
the next add_to_cart (purchase) of the session. Coverage is reported per request, per distinct
source product of those requests, and over the catalogue (every product asked as a source). A
dataset whose dataset.json says simulated is labelled SIMULATED, or "semi-real (real titles and
queries, SIMULATED shoppers)" for the Home Depot benchmark. The machine, SIMD level, threads and
load average are printed: on a shared machine the throughput figures move with the load, so compare
ours and gensim's from the same run. --repeats R trains every variant and gensim R times, in
interleaved rounds (the first round's vectors are the ones scored), and reports each one's median
and best tokens/s and the median of the per-round ratios to gensim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402


def label(meta: dict[str, Any]) -> str:
    if str(meta.get("benchmark", "")).startswith("semireal"):
        return "semi-real (real titles and queries, SIMULATED shoppers)"
    return "SIMULATED" if meta.get("simulated") else "real"


def run_study(description: str, run_dataset: Any, **header: Any) -> None:
    """The command line the item-interaction studies share: --data DIR [DIR ...], --threads,
    --work (default: a temporary folder) and --out; `run_dataset(path, threads, work)` per dataset,
    written after `header` as {"command", **header, "datasets": [...]}."""
    import tempfile

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        result = {"command": " ".join(sys.argv), **header,
                  "datasets": [run_dataset(p, args.threads, work) for p in args.data]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def gensim_throughput(sessions: Any, dim: int, window: int, epochs: int, threads: int) -> dict[str, Any]:
    """gensim Word2Vec skip-gram on the untyped sessions (product rows as words): tokens/s."""
    import gensim
    from gensim.models import Word2Vec

    from upper_fast_train.item_sessions import N_TYPES

    rows = (sessions.keys // N_TYPES).astype(str)
    sentences = [rows[lo:hi].tolist() for lo, hi in zip(sessions.offsets[:-1], sessions.offsets[1:])]
    model = Word2Vec(vector_size=dim, window=window, sg=1, negative=5, sample=0, min_count=1, workers=threads,
                     seed=0, shrink_windows=False)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - start
    tokens = int(sum(len(s) for s in sentences))
    return {"tokens_per_second": tokens * epochs / seconds, "seconds": seconds, "tokens_per_epoch": tokens,
            "version": gensim.__version__}


def item_coverage(ranker: Any, sources: np.ndarray, n_products: int) -> dict[str, float]:
    """Coverage per product rather than per request: the share of the distinct test-window source
    products, and of every catalogue product, that get any candidate (`coverage` counts requests, so
    a popular source counts once per request)."""
    def covered(rows: np.ndarray) -> float:
        return float(np.mean([len(c) > 0 for c in ranker(rows, 1)])) if len(rows) else float("nan")

    distinct = np.unique(sources)
    return {"source_items": int(len(distinct)), "source_item_coverage": covered(distinct),
            "catalogue_coverage": covered(np.arange(n_products, dtype=np.int64))}


def run_dataset(path: str, epochs: int | None, threads: int, work: Path, repeats: int = 1) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast.featurizer import StringIdMap
    from upper_fast_train.item_interactions import ItemInteractionConfig, load_run, train_interactions
    from upper_fast_train.item_interactions_eval import (CooccurrenceRanker, EmbeddingRanker, evaluate_next_action,
                                                         next_action_requests, window_sessions)
    from upper_fast_train.item_sessions import build_sessions

    dataset = load_dataset(path, progress=False)
    tag = label(dataset.meta)
    product_ids = dataset.catalog.column("product_id").to_pylist()
    index = StringIdMap(product_ids)
    base = ItemInteractionConfig(num_threads=threads, progress=False)
    if epochs is not None:
        base = ItemInteractionConfig(**{**base.to_dict(), "epochs": epochs})
    epochs = base.epochs
    train_sessions = build_sessions(dataset.window("train"), index, base.min_session_length, base.gap_s)
    test = window_sessions(dataset, index, base.gap_s, "test")
    variants = {
        "typed (default)": base,
        "plain skip-gram": ItemInteractionConfig(**{**base.to_dict(), "typed_negatives": False}),
        "typed, no subwords": ItemInteractionConfig(**{**base.to_dict(), "subwords": False}),
        "plain, no subwords": ItemInteractionConfig(**{**base.to_dict(), "typed_negatives": False, "subwords": False}),
    }
    trained: dict[str, Any] = {}
    for name, cfg in variants.items():
        run = work / f"{Path(path).name}-{name.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')}"
        metrics = train_interactions(dataset, run, cfg)
        config, arrays = load_run(run)
        trained[name] = {"arrays": arrays, "fz": config.featurizer_config().to_dict(),
                         "tokens_per_second": metrics["tokens_per_second"], "pairs_per_second": metrics["pairs_per_second"],
                         "epoch_seconds": metrics["epoch_seconds"], "sgd_seconds": metrics["sgd_seconds"],
                         "loss_per_pair": metrics["loss_per_pair"], "sessions": metrics["sessions"],
                         "tokens": metrics["tokens"], "tokens_per_type": metrics["tokens_per_type"],
                         "vocabulary": metrics["vocabulary"], "pairs_per_epoch": metrics["pairs_per_epoch"]}
        print(f"  trained {name}: {metrics['tokens_per_second']:.0f} tokens/s "
              f"({metrics['pairs_per_second']:.0f} pairs/s), epochs {np.round(metrics['epoch_seconds'], 2).tolist()} s, "
              f"load {load_average()}", flush=True)
    peer = gensim_throughput(train_sessions, base.dim, base.window, epochs, threads)
    print(f"  gensim {peer['version']}: {peer['tokens_per_second']:.0f} tokens/s, load {load_average()}", flush=True)
    rounds = {name: [t["tokens_per_second"]] for name, t in trained.items()}
    rounds["gensim_word2vec"] = [peer["tokens_per_second"]]
    for r in range(1, repeats):
        for name, cfg in variants.items():
            rounds[name].append(train_interactions(dataset, None, cfg)["tokens_per_second"])
        rounds["gensim_word2vec"].append(
            gensim_throughput(train_sessions, base.dim, base.window, epochs, threads)["tokens_per_second"])
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rounds.items()) + f" tokens/s, load "
              f"{load_average()}", flush=True)
    gensim_rounds = np.array(rounds["gensim_word2vec"])
    repeated = {name: {"tokens_per_second": v, "median": float(np.median(v)), "best": float(np.max(v)),
                       "median_ratio_to_gensim": float(np.median(np.array(v) / gensim_rounds))}
                for name, v in rounds.items()}
    results: dict[str, Any] = {}
    names = {"add_to_cart": "co-carted counts (viewed A, carted B)", "purchase": "co-purchased counts (viewed A, bought B)"}
    for target in ("add_to_cart", "purchase"):
        sources, targets = next_action_requests(test, target)
        rankers: dict[str, Any] = {}
        for name, t in trained.items():
            rankers[name] = EmbeddingRanker(t["arrays"], t["fz"], target)
            rankers[name + " [output vectors]"] = EmbeddingRanker(t["arrays"], t["fz"], target, "context")
        rankers[names[target]] = CooccurrenceRanker(train_sessions, len(product_ids), target)
        rankers["co-viewed counts (viewed A, viewed B)"] = CooccurrenceRanker(train_sessions, len(product_ids), "view")
        rows: dict[str, dict[str, float]] = {}
        for name, ranker in rankers.items():
            rows[name] = {**evaluate_next_action(ranker, sources, targets),
                          **item_coverage(ranker, sources, len(product_ids))}
        ours, cooc = rows["typed (default)"], rows[names[target]]
        best = max((rows[names[target]], rows["co-viewed counts (viewed A, viewed B)"]), key=lambda m: m["recall@100"])
        rows["_targets"] = {
            "relative_recall@100_vs_best_cooccurrence": ours["recall@100"] / best["recall@100"] - 1
            if best["recall@100"] > 0 else float("inf"),
            "relative_recall@100_vs_cooccurrence_same_type": ours["recall@100"] / cooc["recall@100"] - 1
            if cooc["recall@100"] > 0 else float("inf"),
            "coverage_ratio_vs_cooccurrence_same_type": ours["coverage"] / cooc["coverage"] if cooc["coverage"] > 0
            else float("inf"),
            "source_item_coverage_ratio_vs_cooccurrence_same_type": ours["source_item_coverage"]
            / cooc["source_item_coverage"] if cooc["source_item_coverage"] > 0 else float("inf"),
            "catalogue_coverage_ratio_vs_cooccurrence_same_type": ours["catalogue_coverage"]
            / cooc["catalogue_coverage"] if cooc["catalogue_coverage"] > 0 else float("inf"),
            "recall@100_minus_plain": ours["recall@100"] - rows["plain skip-gram"]["recall@100"],
            "recall@10_minus_plain": ours["recall@10"] - rows["plain skip-gram"]["recall@10"],
        }
        results[target] = rows
    for t in trained.values():
        del t["arrays"], t["fz"]
    return {"data": path, "label": tag, "epochs": epochs, "windows": dataset.windows.to_dict() if dataset.windows else None,
            "catalog_products": len(product_ids), "train_sessions": train_sessions.n_sessions,
            "test_sessions": test.n_sessions, "trained": trained, "next_action": results,
            "throughput": {**{f"ours {name} tokens/s": t["tokens_per_second"] for name, t in trained.items()},
                           "gensim_word2vec": peer, "rounds": repeated}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="dataset directories with dataset.json (train_end)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the trainer's (ItemInteractionConfig.epochs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="throughput rounds: every variant and gensim trained this many times, interleaved")
    parser.add_argument("--work", type=Path, default=Path("item_interactions_runs"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    import upper_fast

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
               "simd": upper_fast.simd_level(), "upper_fast": upper_fast.__version__, "load_average_start": load_average()}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads, SIMD {machine['simd']}, "
          f"load average {machine['load_average_start']} (shared machine)", flush=True)
    report: dict[str, Any] = {"command": "python benchmarks/item_interactions.py " + " ".join(argv or sys.argv[1:]),
                              "machine": machine, "epochs": args.epochs, "datasets": []}
    for path in args.data:
        print(f"{path}:", flush=True)
        r = run_dataset(path, args.epochs, args.threads, args.work, args.repeats)
        report["datasets"].append(r)
        print(f"[{r['label']}] {path}: {r['train_sessions']} training sessions "
              f"({r['trained']['typed (default)']['tokens']} tokens); {r['test_sessions']} test-window sessions")
        for target, rows in r["next_action"].items():
            n = rows["typed (default)"]["requests"]
            print(f"  [{r['label']}] next {target} after a view ({n} requests, "
                  f"{rows['typed (default)']['source_items']} source items)")
            print(f"    {'':<44} recall@10  recall@100  coverage (requests / source items / catalogue)")
            for name, m in rows.items():
                if not name.startswith("_"):
                    print(f"    {name:<44} {m['recall@10']:9.3f} {m['recall@100']:11.3f} {m['coverage']:9.3f} "
                          f"{m['source_item_coverage']:6.3f} {m['catalogue_coverage']:6.3f}")
            print(f"    targets: {json.dumps({k: round(v, 3) for k, v in rows['_targets'].items()})}")
        tp = r["throughput"]
        ours = ", ".join(f"{k.removeprefix('ours ').removesuffix(' tokens/s')} {v:.0f}" for k, v in tp.items()
                         if k.startswith("ours"))
        print(f"  throughput, tokens/s ({args.threads} threads): {ours}; gensim Word2Vec "
              f"{tp['gensim_word2vec']['tokens_per_second']:.0f} (untyped, same sessions)")
        if args.repeats > 1:
            for name, m in tp["rounds"].items():
                print(f"    {name:<20} over {args.repeats} rounds: median {m['median']:.0f}, best {m['best']:.0f} tokens/s, "
                      f"median ratio to gensim {m['median_ratio_to_gensim']:.2f}")
    report["machine"]["load_average_end"] = load_average()
    print(f"load average at the end {report['machine']['load_average_end']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
