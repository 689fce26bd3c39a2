"""Shopper sessions as (product, interaction) tokens, skip-gram pairs and the typed negatives.

A token is one (product row, token type) pair, encoded as the key `row * N_TYPES + type` with type
the index in `upper_fast.recommender.TOKEN_TYPES` (view, favorite, add_to_cart, purchase). Sessions
come from `upper_fast.searches` (a chain of one signed-in searcher's events with gaps <= SEARCH_GAP_S);
signed-out searchers are left out, since one country's strangers are not one shopper. Everything here
works on whole numpy arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from upper_fast.featurizer import StringIdMap
from upper_fast.interactions import INTERACTION_CODES
from upper_fast.recommender import TOKEN_TYPES
from upper_fast.searches import SEARCH_GAP_S, chain_ids, searcher_codes

__all__ = ["N_TYPES", "SessionTokens", "build_sessions", "only_viewed", "session_type_masks",
           "skipgram_pairs", "typed_negatives"]

N_TYPES = len(TOKEN_TYPES)
VIEW = 0


@dataclasses.dataclass(frozen=True)
class SessionTokens:
    """Sessions in time order, each a run of distinct tokens in order of first occurrence.

    keys (n_tokens,) int64 token keys (row * N_TYPES + type); offsets (n_sessions + 1,) int64;
    timestamps (n_tokens,) int64 of each token's first event."""

    keys: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    def session_of(self) -> np.ndarray:
        """(n_tokens,) int64 session index of every token."""
        return np.repeat(np.arange(self.n_sessions, dtype=np.int64), np.diff(self.offsets))


def _type_of_interaction(interaction: pa.Array | pa.ChunkedArray) -> np.ndarray:
    names = list(INTERACTION_CODES)
    codes = pc.index_in(interaction, value_set=pa.array(names)).to_numpy(zero_copy_only=False)
    if np.isnan(codes.astype(np.float64)).any():
        raise ValueError(f"interaction column holds names outside {names}")
    return np.maximum(codes.astype(np.int64), 1) - 1  # impression and click -> view (0)


def build_sessions(log: pa.Table, product_index: StringIdMap, min_length: int = 3,
                   gap_s: int = SEARCH_GAP_S) -> SessionTokens:
    """Token sessions of a log (timestamp, user_id, product_id, interaction[, country]) sorted by time.

    Events of unknown products and signed-out events are left out; a token repeated within a session
    keeps its first occurrence; sessions with fewer than `min_length` distinct tokens are dropped.
    Raises ValueError when no session is left, saying what the log lacks."""
    if min_length < 2:
        raise ValueError(f"min_length must be >= 2 (a session needs a pair), got {min_length}")
    users = log.column("user_id")
    rows = product_index.lookup(log.column("product_id").to_pylist())
    keep = (rows >= 0) & ~np.asarray(pc.is_null(users).to_numpy(zero_copy_only=False), dtype=bool)
    if not keep.any():
        raise ValueError("the log has no signed-in events on catalogue products: item-interaction sessions need "
                         "user_id on the search_log rows and product ids that are in the catalogue")
    idx = np.flatnonzero(keep)
    ts = np.asarray(log.column("timestamp").to_numpy(), dtype=np.int64)[idx]
    codes, _ = searcher_codes(users.take(pa.array(idx)).to_pylist())
    session, _ = chain_ids([codes], ts, gap_s=gap_s)
    keys = rows[idx] * N_TYPES + _type_of_interaction(log.column("interaction").take(pa.array(idx)))
    order = np.lexsort((np.arange(len(idx)), ts, session))  # time order within a session, log order on ties
    session, keys, ts = session[order], keys[order], ts[order]
    n_keys = int(product_index.__len__()) * N_TYPES
    _, first = np.unique(session * n_keys + keys, return_index=True)
    first.sort()
    session, keys, ts = session[first], keys[first], ts[first]
    starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    lengths = np.diff(np.r_[starts, len(session)])
    long_enough = np.repeat(lengths >= min_length, lengths)
    if not long_enough.any():
        raise ValueError(f"no session has >= {min_length} distinct (product, interaction) tokens "
                         f"({len(lengths)} sessions, longest {int(lengths.max()) if len(lengths) else 0}): the log needs "
                         f"signed-in shoppers with several events within {gap_s} s of each other; "
                         "lower min_session_length or use a longer log")
    keys, ts = keys[long_enough], ts[long_enough]
    lengths = lengths[lengths >= min_length]
    return SessionTokens(keys, np.r_[0, np.cumsum(lengths)].astype(np.int64), ts)


def skipgram_pairs(offsets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(center, context) token positions of every pair at most `window` apart within a session, both
    directions: two (n_pairs,) int64 arrays."""
    n = int(offsets[-1])
    session = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    centers, contexts = [], []
    for gap in range(1, window + 1):
        p = np.flatnonzero(session[: n - gap] == session[gap:]) if n > gap else np.zeros(0, np.int64)
        centers += [p, p + gap]
        contexts += [p + gap, p]
    return np.concatenate(centers).astype(np.int64), np.concatenate(contexts).astype(np.int64)


def session_type_masks(keys: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_tokens,) int64 bit mask of the token types its product has in its session."""
    session = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    rows = keys // N_TYPES
    group = session * (int(rows.max()) + 1) + rows
    _, inverse = np.unique(group, return_inverse=True)
    masks = np.zeros(inverse.max() + 1, dtype=np.int64)
    np.bitwise_or.at(masks, inverse, np.left_shift(1, keys % N_TYPES))
    return masks[inverse]


def typed_negatives(keys: np.ndarray, offsets: np.ndarray, contexts: np.ndarray, vocab_keys: np.ndarray) -> np.ndarray:
    """The typed negatives of each pair's context token (product p, type i): the tokens (p, j) for every
    stronger type j > i that p does not have in the session, when (p, j) is in the vocabulary.

    keys/offsets: a SessionTokens; contexts (n_pairs,) positions; vocab_keys (V,) sorted int64.
    Returns (n_pairs, N_TYPES - 1) int64 vocabulary ids, -1 where there is none (column c is type c + 1)."""
    masks = session_type_masks(keys, offsets)[contexts]
    ctx = keys[contexts]
    row, typ = ctx // N_TYPES, ctx % N_TYPES
    out = np.full((len(contexts), N_TYPES - 1), -1, dtype=np.int64)
    for j in range(1, N_TYPES):
        want = (typ < j) & ((masks >> j) & 1 == 0)
        key = row * N_TYPES + j
        pos = np.minimum(np.searchsorted(vocab_keys, key), len(vocab_keys) - 1)
        found = want & (vocab_keys[pos] == key)
        out[found, j - 1] = pos[found]
    return out


@dataclasses.dataclass(frozen=True)
class ViewsByGroup:
    """The view tokens of each product group (category), for the category negatives.

    group_of_row (n_products,) int64 (-1 = no group); members (m,) int64 view token ids sorted by
    group, then id; starts/sizes (n_groups,) int64 into members; keys (m,) int64 = group * stride +
    member, sorted (for finding a token's slot in its group)."""

    group_of_row: np.ndarray
    members: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    keys: np.ndarray
    stride: int

    @classmethod
    def build(cls, group_of_row: np.ndarray, vocab_keys: np.ndarray) -> ViewsByGroup:
        view_ids = np.flatnonzero(vocab_keys % N_TYPES == VIEW)
        groups = group_of_row[vocab_keys[view_ids] // N_TYPES]
        keep = groups >= 0
        view_ids, groups = view_ids[keep], groups[keep]
        order = np.argsort(groups, kind="stable")
        n_groups = int(group_of_row.max()) + 1 if len(group_of_row) else 0
        sizes = np.bincount(groups, minlength=n_groups).astype(np.int64)
        stride = int(len(vocab_keys)) + 1
        members = view_ids[order].astype(np.int64)
        return cls(group_of_row, members, np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64), sizes,
                   groups[order].astype(np.int64) * stride + members, stride)


def only_viewed(keys: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_tokens,) bool: the token's product has no other type than view in its session."""
    return session_type_masks(keys, offsets) == (1 << VIEW)


def negative_distribution(keys: np.ndarray, vocab_keys: np.ndarray, power: float = 0.75) -> np.ndarray:
    """(V,) float64 cumulative unigram^power weights of the vocabulary over the session tokens."""
    counts = np.bincount(np.searchsorted(vocab_keys, keys), minlength=len(vocab_keys)).astype(np.float64)
    return np.cumsum(counts ** power)


def describe(tokens: SessionTokens) -> dict[str, Any]:
    """Counts for reports: sessions, tokens, tokens per type."""
    per_type = np.bincount(tokens.keys % N_TYPES, minlength=N_TYPES)
    return {"sessions": tokens.n_sessions, "tokens": int(len(tokens.keys)),
            "tokens_per_type": {t: int(c) for t, c in zip(TOKEN_TYPES, per_type)}}
