"""The towers as ONNX graphs, and their parity with PyTorch (the export's ONNX step).

`export_query_tower` (query_tower.onnx), `export_split_towers` (user_tower.onnx + query_part.onnx),
`export_product_tower` (product_tower.onnx, text encoder included); `check_onnx_parity` /
`check_split_parity` measure the max |difference| against the PyTorch tower; `parity_inputs` draws
the inputs they are checked on (empty histories, signed-out users and unseen queries included).
The input names are the bundle format's (`upper_fast.bundle`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upper_fast.bundle import ONNX_INPUTS, QUERY_PART_INPUTS, USER_INPUTS

__all__ = ["check_onnx_parity", "check_split_parity", "export_product_tower", "export_query_tower",
           "export_split_towers", "parity_inputs"]


class _PositionalTower(torch.nn.Module):
    """Adapter: the exporter passes positional tensors; the tower takes the ONNX names as keywords."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.tower(**dict(zip(ONNX_INPUTS, args)))


class _Method(torch.nn.Module):
    """Adapter: one method of a LeanQueryTower as a module taking positional tensors."""

    def __init__(self, tower: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.tower = tower
        self.method = method

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.tower, self.method)(*args)


def _onnx_export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                 output_name: str, opset: int) -> None:
    """TorchScript export with a dynamic batch axis on every input and the output; the dynamo exporter
    is the fallback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=[output_name],
                              dynamic_axes={n: {0: "batch"} for n in (*input_names, output_name)},
                              opset_version=opset, dynamo=False)
        except Exception:  # noqa: BLE001 - any TorchScript failure: the dynamo exporter handles more ops
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(module, args, str(path), input_names=list(input_names),
                              output_names=[output_name], dynamic_shapes=(tuple({0: batch} for _ in input_names),),
                              opset_version=max(opset, 18), dynamo=True)


def parity_inputs(n: int, *, graph_dim: int, hist_items: int, hist_queries: int, query_terms: int,
                  vocab_size: int, n_countries: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n random query-tower inputs covering the serving cases, as numpy arrays keyed by ONNX name.

    Row i % 4 == 0: signed out (no history, country 0); == 1: unseen query (graph mask 0);
    == 2: empty query text (all padding) with history; else a full row. Term counts vary per row.
    """
    rng = np.random.default_rng(seed)
    L, N, M, G = query_terms, hist_items, hist_queries, graph_dim
    qt = rng.integers(1, vocab_size, size=(n, L), dtype=np.int64)
    qt[np.arange(L)[None, :] >= rng.integers(1, L + 1, size=n)[:, None]] = 0
    hq = rng.integers(1, vocab_size, size=(n, M, L), dtype=np.int64)
    hq[np.arange(L)[None, None, :] >= rng.integers(0, L + 1, size=(n, M))[:, :, None]] = 0
    ht = rng.integers(1, 5, size=(n, N), dtype=np.int64)
    ht[np.arange(N)[None, :] >= rng.integers(0, N + 1, size=n)[:, None]] = 0
    hg = rng.standard_normal((n, N, G)).astype(np.float32) * (ht > 0)[:, :, None]
    inputs = {
        "query_terms": qt,
        "query_graph": rng.standard_normal((n, G)).astype(np.float32),
        "query_graph_mask": np.ones(n, np.float32),
        "hist_item_graph": hg.astype(np.float32),
        "hist_item_type": ht,
        "hist_query_terms": hq,
        "user_country": rng.integers(0, n_countries + 1, size=n, dtype=np.int64),
    }
    kind = np.arange(n) % 4
    out = kind == 0
    inputs["hist_item_graph"][out] = 0.0
    inputs["hist_item_type"][out] = 0
    inputs["hist_query_terms"][out] = 0
    inputs["user_country"][out] = 0
    unseen = kind == 1
    inputs["query_graph"][unseen] = 0.0
    inputs["query_graph_mask"][unseen] = 0.0
    inputs["query_terms"][kind == 2] = 0
    return inputs


def export_query_tower(tower: torch.nn.Module, path: str | os.PathLike[str], example: dict[str, np.ndarray],
                       opset: int = 17, lean: bool = True) -> Path:
    """Export the query-user tower to ONNX with a dynamic batch axis on every input and the output.

    example: ONNX inputs keyed by name (batch >= 2, so no dimension is specialised to 1).
    lean: a `QueryUserTower` is exported through `serving_tower.LeanQueryTower` (the same function with
    weights folded; ~50 onnxruntime nodes after optimisation instead of ~156, 2-3x faster at batch 1).
    Callers check parity against the training tower (`check_onnx_parity`), as `export_bundle` does.
    The TorchScript exporter is tried first (fast, no extra deps); the dynamo exporter is the fallback.
    """
    from upper_fast_train.serving_tower import LeanQueryTower
    from upper_fast_train.towers import QueryUserTower

    path = Path(path)
    missing = [n for n in ONNX_INPUTS if n not in example]
    if missing:
        raise ValueError(f"example inputs lack {missing}")
    tower = tower.eval()
    if lean and isinstance(tower, QueryUserTower):
        tower = LeanQueryTower.from_tower(tower)
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in ONNX_INPUTS)
    # Traced with autograd on: under no_grad, eval-mode nn.TransformerEncoderLayer takes a fused fast
    # path (aten::_transformer_encoder_layer_fwd) that has no ONNX export.
    _onnx_export(_PositionalTower(tower).eval(), args, path, ONNX_INPUTS, "query_vector", opset)
    return path


def export_split_towers(tower: torch.nn.Module, out_dir: str | os.PathLike[str], example: dict[str, np.ndarray],
                        opset: int = 17) -> tuple[Path, Path]:
    """Export the query-user tower in two parts: `user_tower.onnx` (USER_INPUTS -> user_vector) and
    `query_part.onnx` (QUERY_PART_INPUTS -> query_vector), with query_part(q, user_tower(u)) the same
    function as the whole tower (`serving_tower.LeanQueryTower.user_vector` / `query_from_user`).

    The Retriever computes a user's vector once and keeps it (an LRU keyed by the user's inputs), so
    a search for a known or signed-out user runs only the ~16-node query part. Callers check parity
    with `check_split_parity`, as `export_bundle` does. Returns (user_tower path, query_part path).
    """
    from upper_fast_train.serving_tower import LeanQueryTower
    from upper_fast_train.towers import QueryUserTower

    if not isinstance(tower, (QueryUserTower, LeanQueryTower)):
        raise TypeError(f"the split export needs a QueryUserTower, got {type(tower).__name__}")
    missing = [n for n in ONNX_INPUTS if n not in example]
    if missing:
        raise ValueError(f"example inputs lack {missing}")
    lean = tower if isinstance(tower, LeanQueryTower) else LeanQueryTower.from_tower(tower.eval())
    out_dir = Path(out_dir)
    user_args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in USER_INPUTS)
    user_path, query_path = out_dir / "user_tower.onnx", out_dir / "query_part.onnx"
    _onnx_export(_Method(lean, "user_vector").eval(), user_args, user_path, USER_INPUTS, "user_vector", opset)
    with torch.no_grad():
        users = lean.user_vector(*user_args)
    query_args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in QUERY_PART_INPUTS[:3]) + (users,)
    _onnx_export(_Method(lean, "query_from_user").eval(), query_args, query_path, QUERY_PART_INPUTS,
                 "query_vector", opset)
    return user_path, query_path


def _max_abs_diff(tower: torch.nn.Module, inputs: dict[str, np.ndarray], run: Any, batch_size: int) -> float:
    """Max |tower(x) - run(x)| over `inputs` in batches; run maps a dict of numpy inputs to (b, D)."""
    n = len(inputs["query_terms"])
    worst = 0.0
    tower = tower.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            part = {k: np.ascontiguousarray(v[start:start + batch_size]) for k, v in inputs.items()}
            ref = tower(**{k: torch.from_numpy(v) for k, v in part.items()}).numpy()
            worst = max(worst, float(np.abs(ref - run(part)).max()))
    return worst


def _session(path: str | os.PathLike[str]) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_onnx_parity(tower: torch.nn.Module, onnx_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
                      batch_size: int = 250) -> float:
    """Max absolute difference between PyTorch and onnxruntime query vectors over `inputs`."""
    sess = _session(onnx_path)
    return _max_abs_diff(tower, inputs, lambda part: sess.run(["query_vector"], part)[0], batch_size)


def check_split_parity(tower: torch.nn.Module, user_path: str | os.PathLike[str], query_path: str | os.PathLike[str],
                       inputs: dict[str, np.ndarray], batch_size: int = 250) -> float:
    """Max absolute difference between the PyTorch tower and query_part(user_tower(.)) in onnxruntime."""
    user, query = _session(user_path), _session(query_path)

    def run(part: dict[str, np.ndarray]) -> np.ndarray:
        uv = user.run(["user_vector"], {k: part[k] for k in USER_INPUTS})[0]
        return query.run(["query_vector"], {**{k: part[k] for k in QUERY_PART_INPUTS[:3]}, "user_vector": uv})[0]

    return _max_abs_diff(tower, inputs, run, batch_size)


class _PositionalProductTower(torch.nn.Module):
    """Adapter: the exporter passes positional tensors; the product tower takes the input names."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        from upper_fast.products import PRODUCT_INPUTS

        return self.tower(**dict(zip(PRODUCT_INPUTS, args)))


def export_product_tower(tower: torch.nn.Module, path: str | os.PathLike[str], example: dict[str, np.ndarray],
                         opset: int = 17) -> Path:
    """Export the product tower (text encoder included) to ONNX: `upper_fast.products.PRODUCT_INPUTS`
    -> product_vector, dynamic batch axis everywhere and a dynamic token axis on text_ids / text_mask
    (the live catalogue trims a batch to its longest text). example: inputs keyed by name, batch >= 2."""
    from upper_fast.products import PRODUCT_INPUTS

    path = Path(path)
    missing = [n for n in PRODUCT_INPUTS if n not in example]
    if missing:
        raise ValueError(f"example inputs lack {missing}")
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in PRODUCT_INPUTS)
    axes = {n: {0: "batch"} for n in (*PRODUCT_INPUTS, "product_vector")}
    axes["text_ids"] = axes["text_mask"] = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_PositionalProductTower(tower.eval()).eval(), args, str(path), input_names=list(PRODUCT_INPUTS),
                          output_names=["product_vector"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path
