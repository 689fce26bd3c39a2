"""What "a search" and "a session" are, defined once for training, evaluation and serving.

- The *searcher* of an event is its user id when signed in, else its country (signed-out searchers
  cannot be told apart beyond that; they carry no history).
- A *search* is a chain of one searcher's events for one normalised query whose consecutive gaps are
  at most `SEARCH_GAP_S` seconds. A served search at time t sees the searcher's history strictly
  before the search began, so every event of one search (the impressions, the click, the purchase an
  hour later only if nothing broke the chain) shares one history: the one the service had when the
  query was typed. Training histories, shown negatives (the impressions of the same search) and the
  evaluation requests all use this definition; `upper_fast.UserContext` holds what a service knows
  about the searcher at the start of the search.
- A *session* (item-interaction embeddings) is a chain of one searcher's events over all queries with
  the same gap rule.

Functions take integer codes (the caller maps strings to codes once, e.g. with `searcher_codes`) and
work on whole arrays; nothing here loops over events in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SEARCH_GAP_S", "chain_ids", "searcher_codes", "search_ids"]

#: Largest gap, in seconds, between two consecutive events of one search (and of one session).
SEARCH_GAP_S = 1800


def searcher_codes(user_ids: Sequence[Any], countries: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(codes, signed_in): an int64 code per event for its searcher, and whether it was signed in.

    Signed-in events (user id not None) get one code per user id; signed-out events get one code per
    country (None = unknown country), disjoint from the user codes."""
    n = len(user_ids)
    if countries is None:
        countries = [None] * n
    elif len(countries) != n:
        raise ValueError(f"user_ids and countries differ in length ({n} != {len(countries)})")
    index: dict[Any, int] = {}
    codes = np.fromiter(
        (index.setdefault((0, u) if u is not None else (1, c), len(index)) for u, c in zip(user_ids, countries)),
        dtype=np.int64, count=n)
    signed_in = np.fromiter((u is not None for u in user_ids), dtype=bool, count=n)
    return codes, signed_in


def chain_ids(keys: Sequence[np.ndarray], timestamps: np.ndarray, gap_s: int = SEARCH_GAP_S) -> tuple[np.ndarray, np.ndarray]:
    """(ids, starts): per event, the id of its chain and the timestamp at which the chain began.

    A chain is a run of events with equal `keys` (a list of int arrays, all of length n) whose
    consecutive timestamps differ by at most `gap_s` seconds. Ids are 0..n_chains-1 in order of
    (keys, start time). gap_s = 0 joins only events at the very same second."""
    ts = np.asarray(timestamps, dtype=np.int64)
    n = len(ts)
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0 seconds, got {gap_s}")
    cols = [np.asarray(k, dtype=np.int64) for k in keys]
    for c in cols:
        if len(c) != n:
            raise ValueError(f"every key array must have one value per timestamp ({len(c)} != {n})")
    if n == 0:
        return np.zeros(0, np.int64), ts.copy()
    order = np.lexsort((ts, *reversed(cols)))
    t = ts[order]
    new = np.ones(n, dtype=bool)
    same = np.ones(n - 1, dtype=bool)
    for c in cols:
        s = c[order]
        same &= s[1:] == s[:-1]
    new[1:] = ~same | (t[1:] - t[:-1] > gap_s)
    chain = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = chain
    starts = np.empty(n, dtype=np.int64)
    starts[order] = t[first[chain]]
    return ids, starts


def search_ids(searchers: np.ndarray, queries: np.ndarray, timestamps: np.ndarray,
               gap_s: int = SEARCH_GAP_S) -> tuple[np.ndarray, np.ndarray]:
    """(ids, starts) of each event's search: `chain_ids` over (searcher code, query code)."""
    return chain_ids([searchers, queries], timestamps, gap_s)
