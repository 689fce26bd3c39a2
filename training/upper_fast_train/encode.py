"""No-grad encoding of catalog rows: product vectors, and mean-pooled text-encoder vectors cached on
disk by a hash of the encoder's weights and the token rows."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from upper_fast_train.features import ProductTable
from upper_fast_train.towers import UpperModel

__all__ = ["encode_product_rows", "frozen_encode_dtype", "pool_token_rows", "pooled_text_vectors", "to_device"]


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (AVX512-BF16 or AMX); read from
    /proc/cpuinfo, so False where that does not exist (the float32 path is then always taken)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def frozen_encode_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype of the frozen text-encoder passes for TextConfig.frozen_encode_dtype on `device`:
    "float32" / "bfloat16" as named; "auto" = bfloat16 where the hardware computes it natively (CUDA
    with bf16 support, a CPU with AVX512-BF16 or AMX), else float32."""
    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        return torch.bfloat16
    if setting != "auto":
        raise ValueError(f"frozen_encode_dtype must be 'auto', 'float32' or 'bfloat16', got {setting!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Named numpy arrays -> tensors on `device` (the keyword inputs of a tower)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


@torch.no_grad()
def encode_product_rows(
    model: UpperModel, products: ProductTable, rows: np.ndarray, device: torch.device, batch_size: int = 512
) -> np.ndarray:
    """Product vectors of catalog rows (P,) int64 -> (P, D) float32, without grad."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(rows), model.product_tower.fuse[-1].out_features), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        out[start : start + len(part)] = model.product_tower(**to_device(products.take(part), device)).float().cpu().numpy()
    model.train(was_training)
    return out


def _cache_key(encoder: torch.nn.Module, text_ids: np.ndarray, text_mask: np.ndarray, dtype: torch.dtype) -> str:
    """sha1 of the encoder weights, the token ids / masks (the pooled vectors' inputs) and the dtype of
    the pass (float32 keeps the key it always had)."""
    h = hashlib.sha1()
    if dtype != torch.float32:
        h.update(str(dtype).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(text_ids).tobytes())
    h.update(np.ascontiguousarray(text_mask).tobytes())
    return h.hexdigest()


@torch.no_grad()
def pooled_text_vectors(
    model: UpperModel, products: ProductTable, device: torch.device, cache_dir: str | Path | None = None, batch_size: int = 256,
    progress: bool = False, dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """(n, H) float32 mean-pooled text-encoder output of every product (frozen encoder, eval mode).

    Rows are encoded in order of length with each batch trimmed to its longest row (padding is masked,
    so the result is the same). dtype bfloat16 runs the encoder under autocast (the pooled mean is
    taken in float32). With cache_dir, the matrix is read from / written to
    cache_dir/text_pooled-<sha1 of encoder weights + token ids (+ dtype)>.npy.
    """
    return pool_token_rows(model, products.text_ids, products.text_mask, device, cache_dir, batch_size, progress=progress,
                           dtype=dtype)


@torch.no_grad()
def pool_token_rows(
    model: UpperModel, text_ids: np.ndarray, text_mask: np.ndarray, device: torch.device,
    cache_dir: str | Path | None = None, batch_size: int = 256, prefix: str = "text_pooled", progress: bool = False,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """`pooled_text_vectors` of any token rows (n, Lt); all-padding rows give zeros."""
    tower = model.product_tower
    n = len(text_ids)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{prefix}-{_cache_key(tower.text_encoder, text_ids, text_mask, dtype)}.npy"
        if path.exists():
            out = np.load(path)
            if out.shape[0] == n:
                return out
    was_training = tower.text_encoder.training
    tower.text_encoder.eval()
    lengths = text_mask.sum(1)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    width_h = int(tower.text_encoder.config.hidden_size if hasattr(tower.text_encoder.config, "hidden_size") else tower.text_encoder.config.d_model)
    out = np.zeros((n, width_h), dtype=np.float32)
    from tqdm.auto import tqdm

    desc = "encode product texts" if prefix == "text_pooled" else "encode teacher queries"
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        rows = order[start : start + batch_size]
        width = max(1, int(lengths[rows].max()))
        ids = torch.from_numpy(np.ascontiguousarray(text_ids[rows, :width])).to(device)
        mask = torch.from_numpy(np.ascontiguousarray(text_mask[rows, :width])).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out[rows] = tower.pool_text(ids, mask).float().cpu().numpy()
    tower.text_encoder.train(was_training)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    return out
