"""Item-interaction vectors: which part of the typed negatives costs next-add_to_cart recall against
plain skip-gram? The typed default, the typed default without its category negatives
(`category_negatives=0`), and plain skip-gram (`typed_negatives=False`), each trained on the train
window at the defaults otherwise, asked for the next add_to_cart after a view in the VALIDATION and
the test window (`upper_fast_train.item_interactions_eval`).

    PYTHONPATH=python:training python benchmarks/item_interactions_category.py --data DIR [DIR ...]
        [--threads 1] [--work DIR] [--out result.json]

A dataset whose dataset.json says simulated is labelled SIMULATED.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from item_interactions import label, run_study  # noqa: E402

VARIANTS = (("typed (default)", {}), ("typed, no category negatives", {"category_negatives": 0}),
            ("plain skip-gram", {"typed_negatives": False}))


def run_dataset(path: str, threads: int, work: Path) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast.featurizer import StringIdMap
    from upper_fast_train.item_interactions import ItemInteractionConfig, load_run, train_interactions
    from upper_fast_train.item_interactions_eval import (EmbeddingRanker, evaluate_next_action, next_action_requests,
                                                         window_sessions)

    dataset = load_dataset(path, progress=False)
    index = StringIdMap(dataset.catalog.column("product_id").to_pylist())
    base = ItemInteractionConfig(num_threads=threads, progress=False)
    requests = {w: next_action_requests(window_sessions(dataset, index, base.gap_s, w), "add_to_cart")
                for w in ("validation", "test")}
    out: dict[str, Any] = {"data": path, "label": label(dataset.meta),
                           "requests": {w: int(len(s)) for w, (s, _) in requests.items()}, "recall@100": {}}
    for i, (name, overrides) in enumerate(VARIANTS):
        config = ItemInteractionConfig(**{**base.to_dict(), **overrides})
        run = work / f"{Path(path).name}-{i}"
        train_interactions(dataset, run, config)
        saved, arrays = load_run(run)
        ranker = EmbeddingRanker(arrays, saved.featurizer_config().to_dict(), "add_to_cart")
        out["recall@100"][name] = {w: evaluate_next_action(ranker, s, t)["recall@100"] for w, (s, t) in requests.items()}
        print(f"{out['label']} {path} {name}: " + ", ".join(f"{w} {r:.3f}" for w, r in out["recall@100"][name].items()),
              flush=True)
    return out


if __name__ == "__main__":
    run_study(__doc__.split("\n\n")[0], run_dataset, variants=dict(VARIANTS))
