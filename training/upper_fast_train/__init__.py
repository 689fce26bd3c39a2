"""upper_fast_train: the PyTorch side of upper_fast (install with the [train] extra).

`train(dataset, run_dir, config)` trains the UPPER two-tower model into a run directory;
`load_run(run_dir)` loads it back (docs/design.md, docs/training.md).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("upper_fast_train needs PyTorch: pip install upper_fast[train]") from exc

from upper_fast_train.config import TrainConfig
from upper_fast_train.evaluate import Judgments, bm25_baseline, compare_runs, evaluate_judged, evaluate_run
from upper_fast_train.graph import GraphEmbeddings, train_graph_embeddings
from upper_fast_train.pretrain import doc2query_pairs, pretrain_doc2query
from upper_fast_train.text import small_t5_config, train_tokenizer
from upper_fast_train.losses import hinge_loss
from upper_fast_train.run import TrainedRun, load_run
from upper_fast_train.towers import ProductTower, QueryUserTower, UpperModel
from upper_fast_train.train import train

__all__ = [
    "GraphEmbeddings", "Judgments", "ProductTower", "QueryUserTower", "TrainConfig", "TrainedRun", "UpperModel",
    "bm25_baseline", "compare_runs", "doc2query_pairs", "evaluate_judged", "evaluate_run", "hinge_loss", "load_run",
    "pretrain_doc2query", "small_t5_config", "train", "train_graph_embeddings", "train_tokenizer",
]
