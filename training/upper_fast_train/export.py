"""Export a training run to a serving bundle (the torch side of issue 5).

`export_bundle(run_dir, bundle_dir, dataset)`:
1. the query-user tower -> `query_tower.onnx` (dynamic batch, opset 17), checked against PyTorch on
   1,000 inputs (empty histories, signed-out users and unseen queries included);
2. product vectors from the product tower, in batches with a progress bar, optionally sharded across
   processes (`encode_product_shard` per shard, then `merge_product_shards`);
3. quality features normalised to [0, 1] (rank transform, robust to heavy tails);
4. boosting weights learned on interactions after the training window (`upper_fast_train.boosting`);
5. users' recent history as of export time, countries, thresholds, graph tables;
6. `upper_fast.bundle.write_bundle`: index over hydrated vectors, manifest with sha256, atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ONNX_INPUTS = ("query_terms", "query_graph", "query_graph_mask", "hist_item_graph", "hist_item_type",
               "hist_query_terms", "user_country")
THRESHOLD_NAMES = ("negative", "click", "favorite", "add_to_cart", "purchase")
INTERACTION_CODES = {"click": 1, "favorite": 2, "add_to_cart": 3, "purchase": 4}

__all__ = ["check_onnx_parity", "encode_product_shard", "export_bundle", "export_query_tower",
           "merge_product_shards", "normalise_quality", "parity_inputs", "user_histories"]


class _PositionalTower(torch.nn.Module):
    """Adapter: the exporter passes positional tensors; the tower takes the ONNX names as keywords."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.tower(**dict(zip(ONNX_INPUTS, args)))


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
                       opset: int = 17) -> Path:
    """Export the query-user tower to ONNX with a dynamic batch axis on every input and the output.

    example: ONNX inputs keyed by name (batch >= 2, so no dimension is specialised to 1).
    The TorchScript exporter is tried first (fast, no extra deps); the dynamo exporter is the fallback.
    """
    path = Path(path)
    missing = [n for n in ONNX_INPUTS if n not in example]
    if missing:
        raise ValueError(f"example inputs lack {missing}")
    tower = tower.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in ONNX_INPUTS)
    wrapped = _PositionalTower(tower).eval()
    # Traced with autograd on: under no_grad, eval-mode nn.TransformerEncoderLayer takes a fused fast
    # path (aten::_transformer_encoder_layer_fwd) that has no ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapped, args, str(path), input_names=list(ONNX_INPUTS), output_names=["query_vector"],
                              dynamic_axes={n: {0: "batch"} for n in (*ONNX_INPUTS, "query_vector")},
                              opset_version=opset, dynamo=False)
        except Exception:  # noqa: BLE001 - any TorchScript failure: the dynamo exporter handles more ops
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(wrapped, args, str(path), input_names=list(ONNX_INPUTS),
                              output_names=["query_vector"], dynamic_shapes=(tuple({0: batch} for _ in ONNX_INPUTS),),
                              opset_version=max(opset, 18), dynamo=True)
    return path


def check_onnx_parity(tower: torch.nn.Module, onnx_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
                      batch_size: int = 250) -> float:
    """Max absolute difference between PyTorch and onnxruntime query vectors over `inputs`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    n = len(inputs["query_terms"])
    worst = 0.0
    tower = tower.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            part = {k: np.ascontiguousarray(v[start:start + batch_size]) for k, v in inputs.items()}
            ref = tower(**{k: torch.from_numpy(v) for k, v in part.items()}).numpy()
            got = sess.run(["query_vector"], part)[0]
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def normalise_quality(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    """Quality features -> (n, F) float32 in [0, 1] by rank (empirical CDF); NaN -> 0.

    Returns the matrix and, per feature, quantile edges (101 points) so new products can be
    normalised the same way later.
    """
    names = list(columns)
    if not names:
        raise ValueError("no quality columns: the catalog has no numeric quality features to boost with")
    n = len(columns[names[0]])
    out = np.zeros((n, len(names)), np.float32)
    edges: dict[str, list[float]] = {}
    for j, name in enumerate(names):
        x = np.asarray(columns[name], dtype=np.float64)
        ok = np.isfinite(x)
        if ok.sum() == 0:
            edges[name] = []
            continue
        qs = np.quantile(x[ok], np.linspace(0.0, 1.0, 101))
        edges[name] = [float(v) for v in qs]
        ranked = np.sort(x[ok])
        # Average rank of ties so equal values get equal features.
        out[ok, j] = (np.searchsorted(ranked, x[ok], side="left")
                      + np.searchsorted(ranked, x[ok], side="right")) / (2.0 * ok.sum())
    return out, {"names": names, "method": "rank", "quantile_edges": edges}


def encode_product_shard(run: Any, catalog: Any, shards: int, shard: int, out_dir: str | os.PathLike[str],
                         batch_size: int = 512) -> Path:
    """Encode products [shard::shards] block (contiguous rows) and save them as one .npy shard.

    Shard i holds rows [i*n//shards, (i+1)*n//shards); run it per process (`--shards N --shard i`),
    then `merge_product_shards`.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    n = catalog.num_rows
    lo, hi = shard * n // shards, (shard + 1) * n // shards
    vectors = np.asarray(run.encode_products(catalog.slice(lo, hi - lo), batch_size=batch_size), dtype=np.float32)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"product_vectors.shard-{shard:04d}-of-{shards:04d}.npy"
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    (out / f"product_vectors.shard-{shard:04d}-of-{shards:04d}.json").write_text(
        json.dumps({"rows": [lo, hi], "n_products": n}))
    return path


def merge_product_shards(shard_dir: str | os.PathLike[str], n_products: int) -> np.ndarray:
    """Concatenate the shards in `shard_dir`; checks every shard is present and rows tile [0, n)."""
    d = Path(shard_dir)
    metas = sorted(d.glob("product_vectors.shard-*-of-*.json"))
    if not metas:
        raise FileNotFoundError(f"no product vector shards in {d} (run export with --shards N --shard i first)")
    total = int(metas[0].name.split("-of-")[1].split(".")[0])
    if len(metas) != total:
        raise FileNotFoundError(f"{d} holds {len(metas)} of {total} shards")
    parts, expect = [], 0
    for meta in metas:
        info = json.loads(meta.read_text())
        lo, hi = info["rows"]
        if info["n_products"] != n_products or lo != expect:
            raise ValueError(f"shard {meta.name} covers rows {lo}..{hi} of {info['n_products']}; expected to start at {expect} of {n_products}")
        part = np.load(meta.with_suffix(".npy"))
        if part.shape[0] != hi - lo:
            raise ValueError(f"shard {meta.name} has {part.shape[0]} rows, expected {hi - lo}")
        parts.append(part)
        expect = hi
    if expect != n_products:
        raise ValueError(f"shards cover {expect} of {n_products} products")
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))
