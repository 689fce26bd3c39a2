"""Approximate nearest-neighbour index over inner product (HNSW, via hnswlib, with our SIMD kernels).

`Index` stores vectors as f32, bf16 or i8 (symmetric per-vector scale). Quantised indexes search the
graph in the quantised space, then rescore all max(ef, ceil(rescore_factor * k)) candidates of the
beam with the full-precision query against the stored vectors and return the best k. Scores are similarities (higher is better).
See docs/index.md for the file format, thread-safety and the measured trade-offs.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from upper_fast import _core
from upper_fast.types import TopK

__all__ = ["Index"]

Dtype = Literal["f32", "bf16", "i8"]
PathLike = str | os.PathLike[str]


class Index:
    """HNSW inner-product index with int64 ids.

    Args:
        dim: vector dimension.
        dtype: storage type, "f32", "bf16" or "i8".
        M: graph degree (hnswlib's M; level 0 keeps 2M links).
        ef_construction: beam width while building.
        seed: seed of the level generator (builds are reproducible with num_threads=1).

    Searches may run concurrently from many threads; `add` and `mark_deleted` take an exclusive lock.
    """

    __slots__ = ("_impl",)

    def __init__(self, dim: int, dtype: Dtype = "f32", M: int = 16, ef_construction: int = 200, seed: int = 0) -> None:
        self._impl = _core._Index(dim, dtype, M, ef_construction, seed)

    @classmethod
    def _wrap(cls, impl: Any) -> Index:
        obj = cls.__new__(cls)
        obj._impl = impl
        return obj

    def add(self, ids: np.ndarray, vectors: np.ndarray, num_threads: int = 1, replace: bool = False) -> None:
        """Add vectors under ids.

        Args:
            ids: (n,) int64, non-negative, distinct within the call.
            vectors: (n, dim) float32, C-contiguous, finite.
            num_threads: insertion threads (0 = all cores). The GIL is released.
            replace: if False (default), an id that is already live raises ValueError; if True its
                vector is replaced. An id that was marked deleted is revived either way.

        Raises:
            TypeError / ValueError: wrong dtype, shape, contiguity, NaN/inf, duplicate or negative ids.
        """
        self._impl.add(ids, vectors, num_threads, replace)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int | None = None,
        filter: np.ndarray | None = None,  # noqa: A002 - the public name the design fixes
        num_threads: int = 1,
    ) -> TopK:
        """The k most similar live ids per query.

        Args:
            queries: (m, dim) or (dim,) float32, C-contiguous.
            k: hits per query (>= 1).
            ef: beam width (default: the `ef` property); the search keeps max(ef, k) candidates
                (for bf16/i8 at least ceil(rescore_factor * k), all rescored in full precision).
            filter: None, an int64 array of allowed ids, or a bool mask over ids (id i allowed iff
                i < len(mask) and mask[i]). Filters allowing <= 2048 ids are answered exactly.
            num_threads: threads over queries (0 = all cores). The GIL is released.

        Returns:
            TopK with ids (m, k) int64 (-1 padding), scores (m, k) float32 (-inf padding),
            counts (m,) int64; m = 1 for a 1-D query.
        """
        ids, scores, counts = self._impl.search(queries, k, 0 if ef is None else ef, filter, num_threads)
        return TopK(ids, scores, counts)

    def mark_deleted(self, ids: np.ndarray) -> None:
        """Stop returning these ids. (n,) int64.

        Raises ValueError (and deletes nothing) if any id was never added; deleting an id twice is a
        no-op. Deleted ids keep their graph slot (hnswlib semantics) and can be re-added with `add`.
        """
        self._impl.mark_deleted(ids)

    def __len__(self) -> int:
        """Number of live (not deleted) ids."""
        return len(self._impl)

    def __contains__(self, id_: int) -> bool:
        return id_ in self._impl

    @property
    def dim(self) -> int:
        return int(self._impl.dim)

    @property
    def dtype(self) -> Dtype:
        return self._impl.dtype  # type: ignore[no-any-return]

    @property
    def M(self) -> int:  # noqa: N802 - hnswlib's name
        return int(self._impl.M)

    @property
    def ef_construction(self) -> int:
        return int(self._impl.ef_construction)

    @property
    def capacity(self) -> int:
        """Allocated slots (grows automatically on `add`)."""
        return int(self._impl.capacity)

    @property
    def ef(self) -> int:
        """Default search beam width (saved with the index)."""
        return int(self._impl.ef)

    @ef.setter
    def ef(self, value: int) -> None:
        self._impl.ef = value

    @property
    def rescore_factor(self) -> float:
        """bf16/i8: the beam keeps at least ceil(rescore_factor * k) candidates, all rescored with the
        full-precision query (>= 1, default 1; saved with the index). No effect for f32."""
        return float(self._impl.rescore_factor)

    @rescore_factor.setter
    def rescore_factor(self, value: float) -> None:
        self._impl.rescore_factor = value

    def memory_bytes(self) -> int:
        """Estimated resident bytes of the index structures (graph, stored vectors, id map, locks)."""
        return int(self._impl.memory_bytes())

    def save(self, path: PathLike) -> None:
        """Write the index to `path` atomically (temp file in the same directory, fsync, rename)."""
        self._impl.save(path)

    @classmethod
    def load(cls, path: PathLike) -> Index:
        """Load an index written by `save`.

        Raises:
            upper_fast.FormatError: truncated, damaged, foreign or future-version file.
            OSError: the file cannot be read (FileNotFoundError, PermissionError, ...).
        """
        return cls._wrap(_core._Index.load(path))

    @staticmethod
    def read_header(path: PathLike) -> dict[str, Any]:
        """The file header as a dict (format_version, dtype, dim, M, ef_construction, ef,
        rescore_factor, seed, count, live, payload_size, payload_checksum) without loading the index."""
        return dict(_core._Index.read_header(path))

    def __repr__(self) -> str:
        return f"Index(dim={self.dim}, dtype={self.dtype!r}, M={self.M}, len={len(self)})"
