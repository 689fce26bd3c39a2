"""Which device and torchrun rank this process trains on, and the seeding every rank shares."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Dist", "init_distributed", "resolve_device", "seed_all"]


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available (the local rank's GPU under torchrun), else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class Dist:
    """This process's rank in a world of `world` processes (1: not under torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device: torch.device) -> Dist:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def seed_all(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
