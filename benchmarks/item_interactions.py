"""Item-interaction vectors: next add_to_cart / purchase recall on the later window, beside co-occurrence
counts and plain skip-gram, and training throughput beside gensim Word2Vec on the same sessions.

    python benchmarks/item_interactions.py --data DIR [DIR ...] [--epochs 5] [--threads 2] [--out result.json]

For each dataset: train the typed model (typed negatives + title subwords), the plain skip-gram
ablation (the same trainer, random negatives only) and gensim Word2Vec (skip-gram, negative 5, window
5, dim 100, no subsampling) on the untyped sessions (product ids, same token order); build the
co-viewed and co-carted counts from the same training sessions; score every method on the later
window's next-action requests (upper_fast_train.item_interactions_eval). A dataset whose dataset.json
says simulated is labelled SIMULATED, or "semi-real (simulated shoppers)" when it names a benchmark.
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
    if meta.get("benchmark", "").startswith("semireal"):
        return "semi-real (simulated shoppers)"
    return "SIMULATED" if meta.get("simulated") else "real"


def gensim_throughput(sessions: Any, dim: int, window: int, epochs: int, threads: int) -> dict[str, float]:
    """gensim Word2Vec skip-gram on the untyped sessions (product rows as words): tokens/s."""
    from gensim.models import Word2Vec

    rows = (sessions.keys // 4).astype(str)
    sentences = [rows[lo:hi].tolist() for lo, hi in zip(sessions.offsets[:-1], sessions.offsets[1:])]
    model = Word2Vec(vector_size=dim, window=window, sg=1, negative=5, sample=0, min_count=1, workers=threads, seed=0)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - start
    tokens = int(sum(len(s) for s in sentences))
    return {"tokens_per_second": tokens * epochs / seconds, "seconds": seconds, "tokens_per_epoch": tokens}


def run_dataset(path: str, epochs: int, threads: int, work: Path) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast.featurizer import StringIdMap
    from upper_fast_train.item_interactions import ItemInteractionConfig, load_run, train_interactions
    from upper_fast_train.item_interactions_eval import (CooccurrenceRanker, EmbeddingRanker, evaluate_next_action,
                                                         later_sessions, next_action_requests)
    from upper_fast_train.item_sessions import build_sessions

    import pyarrow.compute as pc

    dataset = load_dataset(path, progress=False)
    tag = label(dataset.meta)
    product_ids = dataset.catalog.column("product_id").to_pylist()
    index = StringIdMap(product_ids)
    train_log = dataset.log.filter(pc.less(dataset.log.column("timestamp"), int(dataset.meta["train_end"])))
    base = ItemInteractionConfig(epochs=epochs, num_threads=threads, progress=False)
    train_sessions = build_sessions(train_log, index, base.min_session_length, base.gap_s)
    later = later_sessions(dataset, index, base.gap_s)
    variants = {"typed": base, "plain skip-gram": ItemInteractionConfig(**{**base.to_dict(), "typed_negatives": False}),
                "typed, no subwords": ItemInteractionConfig(**{**base.to_dict(), "subwords": False})}
    trained: dict[str, Any] = {}
    for name, cfg in variants.items():
        run = work / f"{Path(path).name}-{name.replace(' ', '_').replace(',', '')}"
        metrics = train_interactions(dataset, run, cfg)
        config, arrays = load_run(run)
        trained[name] = {"arrays": arrays, "fz": config.featurizer_config().to_dict(),
                         "tokens_per_second": metrics["tokens_per_second"], "epoch_seconds": metrics["epoch_seconds"],
                         "sessions": metrics["sessions"], "tokens": metrics["tokens"]}
        print(f"  trained {name}: {metrics['tokens_per_second']:.0f} tokens/s, epochs {np.round(metrics['epoch_seconds'], 1).tolist()} s",
              flush=True)
    peer = gensim_throughput(train_sessions, base.dim, base.window, epochs, threads)
    results: dict[str, Any] = {}
    for target in ("add_to_cart", "purchase"):
        sources, targets = next_action_requests(later, target)
        rows: dict[str, dict[str, float]] = {}
        for name, t in trained.items():
            rows[name] = evaluate_next_action(EmbeddingRanker(t["arrays"], t["fz"], target), sources, targets)
            rows[name + " (in-out)"] = evaluate_next_action(EmbeddingRanker(t["arrays"], t["fz"], target, "context"),
                                                            sources, targets)
        rows["co-carted counts" if target == "add_to_cart" else "co-purchased counts"] = evaluate_next_action(
            CooccurrenceRanker(train_sessions, len(product_ids), target), sources, targets)
        rows["co-viewed counts"] = evaluate_next_action(CooccurrenceRanker(train_sessions, len(product_ids), "view"),
                                                        sources, targets)
        results[target] = rows
    return {"data": path, "label": tag, "sessions": trained["typed"]["sessions"], "tokens": trained["typed"]["tokens"],
            "later_sessions": later.n_sessions, "next_action": results,
            "throughput": {"ours_typed_tokens_per_second": trained["typed"]["tokens_per_second"],
                           "ours_plain_tokens_per_second": trained["plain skip-gram"]["tokens_per_second"],
                           "ours_no_subwords_tokens_per_second": trained["typed, no subwords"]["tokens_per_second"],
                           "gensim_word2vec": peer}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="dataset directories with dataset.json (train_end)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("item_interactions_runs"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
               "torch": torch.__version__}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads; torch {torch.__version__}")
    report = {"machine": machine, "epochs": args.epochs, "datasets": []}
    for path in args.data:
        print(f"{path}:", flush=True)
        r = run_dataset(path, args.epochs, args.threads, args.work)
        report["datasets"].append(r)
        print(f"[{r['label']}] {path}: {r['sessions']} training sessions, {r['tokens']} tokens; "
              f"{r['later_sessions']} later-window sessions")
        for target, rows in r["next_action"].items():
            n = next(iter(rows.values()))["requests"]
            print(f"  next {target} after a view ({n} requests)   recall@10  recall@100  coverage")
            for name, m in rows.items():
                print(f"    {name:<24} {m['recall@10']:9.3f} {m['recall@100']:11.3f} {m['coverage']:9.3f}")
        tp = r["throughput"]
        print(f"  throughput ({args.threads} threads): typed {tp['ours_typed_tokens_per_second']:.0f} tokens/s, "
              f"plain {tp['ours_plain_tokens_per_second']:.0f}, no subwords {tp['ours_no_subwords_tokens_per_second']:.0f}; "
              f"gensim Word2Vec {tp['gensim_word2vec']['tokens_per_second']:.0f} tokens/s (untyped, same sessions)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
