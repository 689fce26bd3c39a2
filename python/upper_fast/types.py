"""Result types shared by the kernels, the index and the Retriever."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TopK(NamedTuple):
    """The k best candidates per query, best first.

    ids:    (m, k) int64, -1 where a query has fewer than k hits.
    scores: (m, k) float32 similarities (higher is better), -inf where ids is -1.
    counts: (m,) int64, the number of real hits per query (<= k).
    """

    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
