"""Item-interaction vectors: next add_to_cart recall@100 against the number of training epochs, on the
VALIDATION window (where the default is chosen) and the test window, beside co-occurrence counts.

    PYTHONPATH=python:training python benchmarks/item_interactions_epochs.py --data DIR [DIR ...]
        [--epochs 5,10,25,50] [--threads 2] [--work DIR] [--out result.json]

For each dataset and each epoch count: the typed model (the defaults but `epochs`) and plain
skip-gram (`typed_negatives=False`) trained on the train window, asked for the next add_to_cart after
a view (`upper_fast_train.item_interactions_eval`) in the validation and in the test window; the
co-carted and co-viewed counts of the same training sessions answer the same requests. Also the
seconds of training and the last epoch's loss per pair. A dataset whose dataset.json says simulated
is labelled SIMULATED, the Home Depot benchmark semi-real (real titles and queries, SIMULATED shoppers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from item_interactions import label, load_average  # noqa: E402


def run_dataset(path: str, epoch_counts: list[int], threads: int, work: Path) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast.featurizer import StringIdMap
    from upper_fast_train.item_interactions import ItemInteractionConfig, load_run, train_interactions
    from upper_fast_train.item_interactions_eval import (CooccurrenceRanker, EmbeddingRanker, evaluate_next_action,
                                                         next_action_requests, window_sessions)
    from upper_fast_train.item_sessions import build_sessions

    dataset = load_dataset(path, progress=False)
    ids = dataset.catalog.column("product_id").to_pylist()
    index = StringIdMap(ids)
    base = ItemInteractionConfig(num_threads=threads, progress=False)
    train = build_sessions(dataset.window("train"), index, base.min_session_length, base.gap_s)
    requests = {w: next_action_requests(window_sessions(dataset, index, base.gap_s, w), "add_to_cart")
                for w in ("validation", "test")}
    out: dict[str, Any] = {"data": path, "label": label(dataset.meta),
                           "requests": {w: int(len(s)) for w, (s, _) in requests.items()}, "counts": {}, "models": {}}
    for name, kind in (("co-carted counts", "add_to_cart"), ("co-viewed counts", "view")):
        ranker = CooccurrenceRanker(train, len(ids), kind)
        out["counts"][name] = {w: evaluate_next_action(ranker, s, t)["recall@100"] for w, (s, t) in requests.items()}
    for epochs in epoch_counts:
        for typed in (True, False):
            cfg = ItemInteractionConfig(**{**base.to_dict(), "epochs": epochs, "typed_negatives": typed})
            run = work / f"{Path(path).name}-{epochs}-{'typed' if typed else 'plain'}"
            t0 = time.perf_counter()
            metrics = train_interactions(dataset, run, cfg)
            seconds = time.perf_counter() - t0
            config, arrays = load_run(run)
            ranker = EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart")
            key = f"{'typed' if typed else 'plain'} epochs {epochs}"
            out["models"][key] = {**{w: evaluate_next_action(ranker, s, t)["recall@100"] for w, (s, t) in requests.items()},
                                  "seconds": seconds, "last_loss_per_pair": float(metrics["loss_per_pair"][-1])}
            m = out["models"][key]
            print(f"[{out['label']}] {path} {key}: recall@100 validation {m['validation']:.3f} test {m['test']:.3f} "
                  f"({seconds:.1f} s, last loss {m['last_loss_per_pair']:.3f}, load {load_average()})", flush=True)
    for name, r in out["counts"].items():
        print(f"[{out['label']}] {path} {name}: recall@100 validation {r['validation']:.3f} test {r['test']:.3f}")
    print(f"[{out['label']}] requests: {out['requests']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="dataset directories with dataset.json (train_end, valid_end)")
    parser.add_argument("--epochs", default="5,10,25,50", help="comma-separated epoch counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("item_interactions_epochs_runs"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    counts = [int(e) for e in args.epochs.split(",")]
    result = {"threads": args.threads, "epochs": counts, "datasets": [run_dataset(p, counts, args.threads, args.work)
                                                                      for p in args.data]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
