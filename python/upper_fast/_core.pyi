"""Type stubs for the native core upper_fast._core (built from csrc/).

Each area appends the stubs of what it registers (csrc/bindings/<area>.cpp).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

class FormatError(OSError):
    """A damaged, truncated or foreign file (or an unsupported format version)."""

def simd_level() -> str:
    """The SIMD level in use: 'avx512', 'avx2' or 'scalar' (UPPER_FAST_SIMD forces one; a level
    the CPU lacks or an unknown name raises ValueError)."""

def cpu_simd_level() -> str:
    """The best SIMD level this CPU supports, ignoring UPPER_FAST_SIMD."""

def advise_huge_pages(array: np.ndarray) -> bool: ...

# ---- kernels (csrc/bindings/kernels.cpp)

def simd_dot(a: npt.NDArray[Any], b: npt.NDArray[Any], level: str | None = None) -> float | int: ...
def hydrate_products(
    emb: npt.NDArray[np.float32],
    features: npt.NDArray[np.float32],
    scale: float = 1.0,
    out: npt.NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def hydrate_queries(
    q: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def fuse_hybrid(
    dense_rows: npt.NDArray[np.int64],
    dense_scores: npt.NDArray[np.float32],
    dense_cosines: npt.NDArray[np.float32],
    dense_tiers: npt.NDArray[np.int8],
    lexical_rows: npt.NDArray[np.int64],
    bm25: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    boost: npt.NDArray[np.float32],
    removed: npt.NDArray[np.bool_],
    thresholds: HingeThresholds,
    method: str,
    weights: Sequence[float],
    rrf_k: int,
    n_words: int,
    k: int,
    min_tier: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int8],
           npt.NDArray[np.uint8]]: ...
def rerank_exact(
    queries: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    candidates: npt.NDArray[np.int64],
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def topk_inner_product(
    queries: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    candidates: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    k: int,
    exclude_indptr: npt.NDArray[np.int64] | None = None,
    exclude_indices: npt.NDArray[np.int64] | None = None,
    num_threads: int = 0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

class HingeThresholds:
    def __init__(self, click: float, favorite: float, add_to_cart: float, purchase: float, negative: float) -> None: ...
    def threshold(self, code: int) -> float: ...
    def prune(self, scores: npt.NDArray[np.float32], min_tier: int) -> npt.NDArray[np.bool_]: ...
    def tier(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]: ...
    def finish_hits(
        self, ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], boost: npt.NDArray[np.float32],
        k: int, min_tier: int, prune: bool,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int8]]: ...
    def hinge_loss(
        self,
        scores: npt.NDArray[np.float32],
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float32] | None = None,
    ) -> tuple[float, npt.NDArray[np.float32]]: ...
    def calibrate(
        self, scores: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]
    ) -> tuple[list[int], list[list[int]], list[int]]: ...

# ---- index (csrc/bindings/index.cpp; wrapped by upper_fast.index.Index)

class _Index:
    def __init__(self, dim: int, dtype: str = "f32", M: int = 16, ef_construction: int = 200, seed: int = 0) -> None: ...
    def add(
        self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], num_threads: int = 1, replace: bool = False
    ) -> None: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        ef: int = 0,
        filter: npt.NDArray[np.int64] | npt.NDArray[np.bool_] | None = None,
        num_threads: int = 1,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def mark_deleted(self, ids: npt.NDArray[np.int64]) -> None: ...
    def __contains__(self, id: int) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def M(self) -> int: ...
    @property
    def ef_construction(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    ef: int
    rescore_factor: float
    def memory_bytes(self) -> int: ...
    def save(self, path: str | Any) -> None: ...
    @staticmethod
    def load(path: str | Any) -> _Index: ...
    @staticmethod
    def read_header(path: str | Any) -> dict[str, Any]: ...

def skipgram_sgd(
    input: npt.NDArray[np.float32],
    output: npt.NDArray[np.float32],
    subwords: npt.NDArray[np.float32] | None,
    title_terms: npt.NDArray[np.int64],
    centers: npt.NDArray[np.int64],
    center_rows: npt.NDArray[np.int64],
    group_offsets: npt.NDArray[np.int64],
    targets: npt.NDArray[np.int64],
    negatives: npt.NDArray[np.int64],
    lr_start: float,
    lr_end: float,
    num_threads: int = 0,
) -> float: ...

class SkipgramCorpus:
    def __init__(
        self,
        tokens: npt.NDArray[np.int64],
        session_offsets: npt.NDArray[np.int64],
        token_rows: npt.NDArray[np.int64],
        title_terms: npt.NDArray[np.int64],
        typed: npt.NDArray[np.int64],
        only_viewed: npt.NDArray[np.int64],
        category_start: npt.NDArray[np.int64],
        category_size: npt.NDArray[np.int64],
        category_slot: npt.NDArray[np.int64],
        category_members: npt.NDArray[np.int64],
    ) -> None: ...
    @property
    def n_positions(self) -> int: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_typed(self) -> int: ...
    def n_pairs(self, window: int) -> int: ...
    def epoch_order(self, seed: int, epoch: int) -> npt.NDArray[np.int64]: ...
    def sgd(
        self,
        input: npt.NDArray[np.float32],
        output: npt.NDArray[np.float32],
        subwords: npt.NDArray[np.float32] | None,
        order: npt.NDArray[np.int64],
        lr_start: float,
        lr_end: float,
        seed: int,
        epoch: int,
        window: int,
        random_negatives: int,
        typed: bool,
        category_negatives: int,
        num_threads: int = 0,
    ) -> tuple[float, int]: ...
    def draws(
        self,
        order: npt.NDArray[np.int64],
        seed: int,
        epoch: int,
        window: int,
        random_negatives: int,
        typed: bool,
        category_negatives: int,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
