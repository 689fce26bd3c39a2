"""upper_fast_train: the PyTorch side of upper_fast (the `upper-fast-train` distribution, training/).

`train(dataset, run_dir, config)` trains the UPPER model into a run directory; `load_run(run_dir)`
loads it back (docs/design.md, docs/training.md). The names below load on first use, so importing a
submodule that needs no torch (the simulator, the command registry) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "TrainConfig": "upper_fast_train.config",
    "Judgments": "upper_fast_train.evaluate", "bm25_baseline": "upper_fast_train.evaluate",
    "compare_runs": "upper_fast_train.evaluate", "evaluate_judged": "upper_fast_train.evaluate",
    "evaluate_run": "upper_fast_train.evaluate",
    "GraphEmbeddings": "upper_fast_train.graph", "train_graph_embeddings": "upper_fast_train.graph",
    "doc2query_pairs": "upper_fast_train.pretrain", "pretrain_doc2query": "upper_fast_train.pretrain",
    "small_t5_config": "upper_fast_train.text", "train_tokenizer": "upper_fast_train.text",
    "hinge_loss": "upper_fast_train.losses",
    "TrainedRun": "upper_fast_train.run", "load_run": "upper_fast_train.run",
    "ProductTower": "upper_fast_train.towers", "QueryUserTower": "upper_fast_train.towers",
    "UpperModel": "upper_fast_train.towers",
    "Objective": "upper_fast_train.objective", "build_objective": "upper_fast_train.objective",
    "train": "upper_fast_train.loop",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'upper_fast_train' has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("upper_fast_train needs PyTorch: pip install upper-fast-train "
                          "(from a checkout: pip install torch==2.13.0 ./training)") from exc
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
