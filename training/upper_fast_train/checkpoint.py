"""Model weights and resumable checkpoints: safetensors weights, optimizer state, the dynamic
negative pool and the step, saved and loaded together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from upper_fast_train.config import TrainConfig
from upper_fast_train.negatives import DynamicPool
from upper_fast_train.optim import SplitOptimizer

__all__ = ["load_checkpoint", "save_checkpoint", "save_model"]


def save_model(model: torch.nn.Module, path: Path) -> None:
    """safetensors, with the shared term table stored once."""
    from safetensors.torch import save_model as _save

    _save(model, str(path))


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | SplitOptimizer,
                    pool: DynamicPool | None, step: int, config: TrainConfig) -> None:
    """Write everything a resumed run needs to continue exactly at `step` into the folder `path`."""
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, path / "model.safetensors")
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    if pool is not None:
        np.savez(path / "pool.npz", rows=pool.rows, vectors=pool.vectors, last_refresh=pool.last_refresh)
    config.to_json(path / "config.json")
    (path / "state.json").write_text(json.dumps({"step": step}))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | SplitOptimizer,
                    pool: DynamicPool | None, device: torch.device) -> int:
    """Restore `save_checkpoint`'s folder into model, optimizer and pool in place; returns the step."""
    from safetensors.torch import load_model

    state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    saved_sparse = set(state) == {"dense", "sparse"}  # a SplitOptimizer's state dict
    if saved_sparse != isinstance(optimizer, SplitOptimizer):  # checked before anything is loaded
        raise ValueError(
            f"{path} was saved with sparse_term_grads {'on' if saved_sparse else 'off'}; resume it with "
            f"sparse_term_grads {str(saved_sparse).lower()} (the setting a run was started with must stay for its resumes)"
        )
    load_model(model, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(state)
    if pool is not None and (path / "pool.npz").exists():
        with np.load(path / "pool.npz") as z:
            pool.rows = z["rows"]
            pool.vectors = z["vectors"]
            pool.last_refresh = int(z["last_refresh"])
        pool.position[:] = -1
        pool.position[pool.rows] = np.arange(len(pool.rows))
    return int(json.loads((path / "state.json").read_text())["step"])
