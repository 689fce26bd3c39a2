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
from upper_fast_train.losses import hinge_loss
from upper_fast_train.run import TrainedRun, load_run
from upper_fast_train.towers import ProductTower, QueryUserTower, UpperModel
from upper_fast_train.train import train

__all__ = ["TrainConfig", "TrainedRun", "load_run", "train", "hinge_loss", "UpperModel", "ProductTower", "QueryUserTower"]
