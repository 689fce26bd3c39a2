"""Catalogue encoding on Ray Data: the product tower over a catalogue, on a local Ray runtime or a cluster.

`ProductEncoder` is a Ray Data `map_batches` callable class (each actor loads the training run once
and encodes pyarrow batches of catalogue rows); `encode_catalogue_ray` runs it over a catalogue and
writes the product-vector shards that `export.merge_product_shards` reads (`upper-fast export --ray`).

The catalogue is cut into the chunks the single-process export encodes (`export.encode_chunk_rows`),
one Ray block per chunk, and each actor encodes whole chunks: the vectors are the same bits as the
export's own encoding. Needs upper-fast-train with its [scale] extra (torch and ray[data]); on a cluster, every
node needs them too.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ROW_COLUMN", "ProductEncoder", "connect_ray", "encode_catalogue_ray", "pack_run"]

# The column of catalogue row numbers that travels with each batch (so results can be put in order).
ROW_COLUMN = "row"
SCALE_INSTALL = "pip install 'upper-fast-train[scale]' (ray[data])"


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"catalogue encoding on Ray needs ray[data]: {SCALE_INSTALL} ({exc})") from exc
    return ray


class ProductEncoder:
    """Catalogue rows -> product vectors, as a Ray Data `map_batches` callable class.

        ds.map_batches(ProductEncoder, fn_constructor_kwargs={"run_dir": RUN}, batch_format="pyarrow",
                       batch_size=4096, concurrency=2, num_cpus=1)

    Each actor loads the run once (CPU, `threads` torch threads), from run_dir, or from run_files
    (`pack_run`: the run's files as bytes, for workers that cannot read the driver's disk). A batch
    is a pyarrow Table in the
    catalogue schema, optionally with an int64 `row` column (catalogue row numbers, passed through);
    returns {"row": (b,) int64, "vector": (b, D) float32}. With chunk_rows, the batch is encoded one
    chunk (row // chunk_rows) at a time, as the single-process export does; batches cut elsewhere give
    the same vectors up to float rounding, not bit for bit.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, batch_size: int = 512, threads: int = 1,
                 chunk_rows: int | None = None, run_files: dict[str, bytes] | None = None) -> None:
        import tempfile

        import torch

        from upper_fast_train import load_run

        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if (run_dir is None) == (run_files is None):
            raise ValueError("pass the training run as run_dir (a path every worker can read) or run_files "
                             "(upper_fast_train.ray_encode.pack_run), one of the two")
        torch.set_num_threads(threads)
        if run_files is not None:
            self._unpacked = tempfile.TemporaryDirectory(prefix="upper_fast_run-")
            run_dir = Path(self._unpacked.name)
            for rel, data in run_files.items():
                (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (run_dir / rel).write_bytes(data)
        self.run = load_run(run_dir)
        # The pooled-text cache of a frozen text encoder is a folder on the driver's disk: actors
        # compute (the same bits) instead of reading or writing it.
        self.run.train_config = self.run.train_config.replace(text_cache_dir=None)
        self.batch_size = int(batch_size)
        self.chunk_rows = chunk_rows

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        import pyarrow as pa

        if not isinstance(batch, pa.Table):
            raise TypeError(f"ProductEncoder takes pyarrow batches (map_batches(..., batch_format='pyarrow')), "
                            f"got {type(batch).__name__}")
        if ROW_COLUMN in batch.column_names:
            rows = np.asarray(batch.column(ROW_COLUMN).to_numpy(), dtype=np.int64)
            batch = batch.drop_columns([ROW_COLUMN])
        else:
            rows = np.arange(batch.num_rows, dtype=np.int64)
        parts = []
        for lo, hi in self._chunks(rows):
            part = batch.slice(lo, hi - lo)
            parts.append(np.asarray(self.run.encode_products(part, batch_size=self.batch_size), dtype=np.float32))
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        return {ROW_COLUMN: rows, "vector": np.ascontiguousarray(vectors)}

    def _chunks(self, rows: np.ndarray) -> Iterator[tuple[int, int]]:
        """[lo, hi) positions in the batch with the same chunk number (the whole batch without chunk_rows)."""
        if not len(rows):
            return
        if self.chunk_rows is None:
            yield 0, len(rows)
            return
        chunk = rows // self.chunk_rows
        cuts = np.flatnonzero(np.diff(chunk)) + 1
        edges = [0, *cuts.tolist(), len(rows)]
        yield from zip(edges[:-1], edges[1:])


def pack_run(run_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """What `load_run` reads from a training run (its top-level files and text_encoder/; not the
    checkpoint or the text cache), as {relative path: bytes}, to ship to cluster workers."""
    root = Path(run_dir)
    files = [p for p in root.iterdir() if p.is_file()]
    if (root / "text_encoder").is_dir():
        files += [p for p in sorted((root / "text_encoder").rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(files)}


def _address_answers(address: str, timeout_s: float) -> str | None:
    """None when a TCP connection to the address's host:port opens within timeout_s, else why not.
    "auto" / "local" are left to ray.init (they look for a cluster on this machine)."""
    if address in ("auto", "local"):
        return None
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return f"{address!r} is not HOST:PORT (or ray://HOST:PORT)"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} within {timeout_s:g} s ({exc})"


def connect_ray(address: str | None = None, num_cpus: int | None = None, timeout_s: float = 5.0) -> Any:
    """ray.init for catalogue encoding: address None starts a local runtime with num_cpus; an address
    that does not answer within timeout_s raises ConnectionError naming the fix (a plain TCP connect
    first: ray.init itself waits much longer). A runtime already initialised in this process is used
    as it is. Returns the ray module."""
    ray = _import_ray()
    fix = ("start the cluster there (`ray start --head` on that machine), check the address and port, or "
           "leave ADDRESS out (`--ray` alone) to encode on a local Ray runtime")
    if address is not None:
        why = _address_answers(address, timeout_s)
        if why is not None:
            raise ConnectionError(f"Ray at {address} does not answer: {why}; {fix}")
    if ray.is_initialized():
        return ray
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise ConnectionError(f"Ray at {address} does not answer: {exc}; {fix}") from exc
    return ray


def encode_catalogue_ray(run_dir: str | os.PathLike[str], catalog: Any, out_dir: str | os.PathLike[str], *,
                         address: str | None = None, workers: int = 2, threads: int = 1, batch_size: int = 512,
                         timeout_s: float = 5.0, progress: bool = False) -> dict[str, Any]:
    """Encode every row of `catalog` (pyarrow Table) with the run's product tower on Ray; write one shard
    per export chunk into out_dir (`export.write_product_shard`; merge with `merge_product_shards`).

    address: None = a local Ray runtime with workers * threads CPUs (or the runtime already
    initialised in this process); "HOST:PORT", "ray://HOST:PORT" or "auto" = an existing cluster.
    workers: encoder actors (each holds the model once); threads: torch threads per actor.
    On a cluster the run's files travel to the workers through Ray (`pack_run`), and shards are
    written on this machine as results arrive: no shared filesystem is needed.
    Returns {"shards": [paths], "products", "seconds", "products_per_s", "workers", "threads",
    "chunk_rows", "address"}.
    """
    import pyarrow as pa

    from upper_fast_train.export import encode_chunk_rows, write_product_shard

    for name, v in (("workers", workers), ("threads", threads), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if not (Path(run_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no config.json): pass the run "
                                "`upper-fast train` wrote")
    n = catalog.num_rows
    if n == 0:
        raise ValueError("the catalogue has no rows to encode")
    ray = connect_ray(address, num_cpus=workers * threads, timeout_s=timeout_s)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    chunk = encode_chunk_rows(batch_size)
    starts = list(range(0, n, chunk))
    table = catalog.append_column(ROW_COLUMN, pa.array(np.arange(n, dtype=np.int64)))
    t0 = time.perf_counter()
    ds = ray.data.from_arrow([table.slice(lo, chunk) for lo in starts])  # one block per chunk
    run = {"run_dir": str(Path(run_dir).resolve())} if address is None else {"run_files": pack_run(run_dir)}
    encoded = ds.map_batches(ProductEncoder, fn_constructor_kwargs={**run, "batch_size": batch_size,
                                                                   "threads": threads, "chunk_rows": chunk},
                             batch_size=chunk, batch_format="pyarrow", concurrency=workers, num_cpus=threads)
    pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    paths: dict[int, Path] = {}
    for out in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        rows, vectors = np.asarray(out[ROW_COLUMN], np.int64), np.asarray(out["vector"], np.float32)
        for c in np.unique(rows // chunk).tolist():
            take = rows // chunk == c
            pending.setdefault(c, []).append((rows[take], vectors[take]))
            lo, hi = c * chunk, min(n, (c + 1) * chunk)
            if sum(len(r) for r, _ in pending[c]) < hi - lo:
                continue
            parts = pending.pop(c)
            r = np.concatenate([p[0] for p in parts])
            order = np.argsort(r, kind="stable")
            if not np.array_equal(r[order], np.arange(lo, hi)):
                raise RuntimeError(f"Ray returned {len(r)} rows for chunk {lo}..{hi} that are not its rows")
            v = np.concatenate([p[1] for p in parts])[order]
            paths[c] = write_product_shard(out_dir, v, c, len(starts), lo, hi, n)
    seconds = time.perf_counter() - t0
    missing = sorted(set(range(len(starts))) - set(paths))
    if missing:
        raise RuntimeError(f"Ray returned no vectors for chunks {missing[:5]} of {len(starts)}")
    return {"shards": [str(paths[c]) for c in sorted(paths)], "products": n, "seconds": seconds,
            "products_per_s": n / seconds, "workers": workers, "threads": threads, "chunk_rows": chunk,
            "address": address or "local"}
