"""Item-interaction vectors: should a product without a trained `to` vector still be a candidate?

The typed model answers "viewed A, what is carted next?" among the products whose add_to_cart token
the training sessions hold. A product never carted in training cannot be suggested, however often it
was viewed, while plain skip-gram ranks every product. With back-off (`EmbeddingRanker(backoff=...)`)
such a product stands in with its view vector, else its title's subword vector: as it is ("view"),
or mapped by the least-squares linear map from view to add_to_cart vectors ("translate"). This benchmark trains
the typed default and plain skip-gram on each dataset's train window and asks for the next
add_to_cart after a view in the VALIDATION and the test window, with and without back-off, and counts
the requests whose target has no training add_to_cart token.

    PYTHONPATH=python:training python benchmarks/item_interactions_backoff.py --data DIR [DIR ...]
        [--threads 1] [--work DIR] [--out result.json]

A dataset whose dataset.json says simulated is labelled SIMULATED.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from item_interactions import label, run_study  # noqa: E402

WINDOWS = ("validation", "test")


def run_dataset(path: str, threads: int, work: Path) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast.featurizer import StringIdMap
    from upper_fast.recommender import token_type
    from upper_fast_train.item_interactions import ItemInteractionConfig, load_run, train_interactions
    from upper_fast_train.item_interactions_eval import (EmbeddingRanker, evaluate_next_action, next_action_requests,
                                                         window_sessions)
    from upper_fast_train.item_sessions import N_TYPES

    dataset = load_dataset(path, progress=False)
    index = StringIdMap(dataset.catalog.column("product_id").to_pylist())
    base = ItemInteractionConfig(num_threads=threads, progress=False)
    requests = {w: next_action_requests(window_sessions(dataset, index, base.gap_s, w), "add_to_cart") for w in WINDOWS}
    out: dict[str, Any] = {"data": path, "label": label(dataset.meta),
                           "requests": {w: int(len(s)) for w, (s, _) in requests.items()}, "recall@100": {},
                           "recall@10": {}}
    for i, (name, overrides) in enumerate((("typed (default)", {}), ("plain skip-gram", {"typed_negatives": False}))):
        run = work / f"{Path(path).name}-{i}"
        train_interactions(dataset, run, ItemInteractionConfig(**{**base.to_dict(), **overrides}))
        saved, arrays = load_run(run)
        keys = arrays["keys"]
        if i == 0:
            carted = np.zeros(len(arrays["product_ids"]), bool)
            carted[keys[keys % N_TYPES == token_type("add_to_cart")] // N_TYPES] = True
            out["targets_without_a_training_cart"] = {w: float(np.mean(~carted[t])) for w, (_, t) in requests.items()}
            out["products_with_a_cart_vector"] = int(carted.sum())
        for backoff in (False, "view", "translate"):
            if backoff and i == 1:
                continue  # plain skip-gram has one token per product: every product is already a candidate
            ranker = EmbeddingRanker(arrays, saved.featurizer_config().to_dict(), "add_to_cart", backoff=backoff)
            key = name + {False: "", "view": ", back-off (view vectors)", "translate": ", back-off (translated)"}[backoff]
            res = {w: evaluate_next_action(ranker, s, t) for w, (s, t) in requests.items()}
            out["recall@100"][key] = {w: r["recall@100"] for w, r in res.items()}
            out["recall@10"][key] = {w: r["recall@10"] for w, r in res.items()}
            print(f"{out['label']} {path} {key}: R@100 " + ", ".join(
                f"{w} {r['recall@100']:.3f}" for w, r in res.items()), flush=True)
    print(f"{out['label']} {path}: targets without a training cart token " + ", ".join(
        f"{w} {v:.3f}" for w, v in out["targets_without_a_training_cart"].items()), flush=True)
    return out


if __name__ == "__main__":
    run_study(__doc__.split("\n\n")[0], run_dataset)
