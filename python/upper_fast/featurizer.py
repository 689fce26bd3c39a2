"""Text featurizer, string id maps and leakage-free user histories (C++ core; docs/featurizer.md).

The same code featurizes for training and for serving, so there is no train/serve skew:

- ``Featurizer(config).normalize(text)``: NFKC, full case folding, every character that is not a
  letter, number or mark becomes a space (format characters such as U+00AD are dropped), spaces
  collapse. Tables are generated from Python's ``unicodedata`` (``unicode_version()``).
- Hashed term ids in one id space: 0 = padding, word unigrams ``[1, 1+W)``, word bigrams
  ``[1+W, 1+W+B)``, char trigrams of ``"#" + word + "#"`` after. The hash is FNV-1a 64 over a type
  prefix (``b"w:"``, ``b"b:"``, ``b"c:"``) and the term's UTF-8 bytes, finalised by murmur3 fmix64,
  modulo the bucket count: identical in every process, run and platform.
- ``StringIdMap``: str -> row (-1 if absent) in C++.
- ``build_histories``: per-event recent engaged products and distinct queries, strictly before the
  event's timestamp.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from upper_fast import _core

__all__ = [
    "Featurizer",
    "FeaturizerConfig",
    "StringIdMap",
    "build_histories",
    "unicode_version",
]

_FORMAT = "upper_fast.Featurizer"
_FORMAT_VERSION = 1
_HASH = "fnv1a64+fmix64"
_MAX_BUCKETS = 1 << 30
_MAX_TERMS = 1 << 20


def unicode_version() -> str:
    """The Unicode version of the compiled normalisation tables (Python's ``unidata_version``
    when ``tools/gen_unicode_tables.py`` ran)."""
    return str(_core.unicode_version())


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


class _ArrowChunks:
    """Buffers of a pyarrow string column, chunk by chunk, for the zero-copy native paths."""

    def __init__(self, column: Any) -> None:
        import pyarrow as pa

        if not isinstance(column, (pa.Array, pa.ChunkedArray)):
            raise TypeError(f"expected a pyarrow string Array or ChunkedArray (one column), got {type(column).__name__}")
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self.parts: list[tuple[int, np.ndarray, np.ndarray]] = []
        start = 0
        for chunk in chunks:
            if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
                is_view = getattr(pa.types, "is_string_view", lambda _: False)(chunk.type)
                if not is_view:
                    raise TypeError(f"pyarrow column must hold strings, got {chunk.type}: cast it to pa.string()")
                chunk = chunk.cast(pa.large_string())
            if chunk.null_count:
                chunk = chunk.fill_null("")  # a missing text has no terms
            _, offsets_buf, data_buf = chunk.buffers()
            width = np.int32 if pa.types.is_string(chunk.type) else np.int64
            if offsets_buf is None or len(chunk) == 0:
                offsets = np.zeros(1, dtype=width)
            else:
                offsets = np.frombuffer(offsets_buf, dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
            data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
            self.parts.append((start, np.ascontiguousarray(offsets), data))
            start += len(chunk)
        self.length = start


def _is_arrow(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "pyarrow"



@dataclasses.dataclass(frozen=True)
class FeaturizerConfig:
    """Bucket counts per term type and the term budgets of queries and product texts.

    ``vocab_size = 1 + word_buckets + bigram_buckets + trigram_buckets`` (id 0 is padding).
    """

    word_buckets: int = 262144
    bigram_buckets: int = 262144
    trigram_buckets: int = 131072
    max_query_terms: int = 32
    max_product_terms: int = 64
    # English plural stemming of every word before hashing (Harman's "S" stemmer: "ies" -> "y",
    # "es" -> "e", "s" -> ""), so "doors" and "door" share their ids. Off unless a config says so;
    # descriptions written before it existed read as off.
    stem_plurals: bool = False

    def __post_init__(self) -> None:
        for name in ("word_buckets", "bigram_buckets", "trigram_buckets"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), 1, _MAX_BUCKETS))
        if not isinstance(self.stem_plurals, bool):
            raise TypeError(f"stem_plurals must be a bool, got {self.stem_plurals!r}")
        for name in ("max_query_terms", "max_product_terms"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), 1, _MAX_TERMS))

    @property
    def vocab_size(self) -> int:
        return 1 + self.word_buckets + self.bigram_buckets + self.trigram_buckets

    @property
    def word_range(self) -> tuple[int, int]:
        """Half-open id range of word unigrams."""
        return 1, 1 + self.word_buckets

    @property
    def bigram_range(self) -> tuple[int, int]:
        """Half-open id range of word bigrams."""
        start = 1 + self.word_buckets
        return start, start + self.bigram_buckets

    @property
    def trigram_range(self) -> tuple[int, int]:
        """Half-open id range of char trigrams."""
        start = 1 + self.word_buckets + self.bigram_buckets
        return start, start + self.trigram_buckets

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored as ``featurizer.json`` in bundles and run configs)."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "hash": _HASH,
            "unicode_version": unicode_version(),
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturizerConfig:
        """Inverse of ``to_dict``. Raises ValueError for another format, hash or Unicode version
        (the ids or normal forms would silently differ)."""
        if not isinstance(data, dict):
            raise TypeError(f"from_dict expects a dict, got {type(data).__name__}")
        if data.get("format", _FORMAT) != _FORMAT or data.get("version", _FORMAT_VERSION) != _FORMAT_VERSION:
            raise ValueError(
                f"not a {_FORMAT} v{_FORMAT_VERSION} description: format={data.get('format')!r}, "
                f"version={data.get('version')!r}"
            )
        if data.get("hash", _HASH) != _HASH:
            raise ValueError(f"featurizer hash {data.get('hash')!r} is not {_HASH!r}: ids would differ")
        stored = data.get("unicode_version", unicode_version())
        if stored != unicode_version():
            raise ValueError(
                f"featurizer was saved with Unicode {stored} tables but this build has {unicode_version()}: "
                "normal forms could differ; use the upper_fast version that wrote it"
            )
        missing = [k for k in ("word_buckets", "bigram_buckets", "trigram_buckets") if k not in data]
        if missing:
            raise ValueError(f"featurizer description lacks {missing}: ids depend on them, refusing to guess")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Featurizer:
    """Normalises text and maps it to hashed term ids (C++ core).

    Thread-safe; ``featurize`` releases the GIL and uses ``num_threads`` threads (0 = all cores).
    """

    __slots__ = ("config", "_impl")

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        if config is None:
            config = FeaturizerConfig()
        if not isinstance(config, FeaturizerConfig):
            raise TypeError(f"config must be a FeaturizerConfig, got {type(config).__name__}")
        self.config = config
        self._impl = _core.Featurizer(config.word_buckets, config.bigram_buckets, config.trigram_buckets,
                                      config.stem_plurals)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def normalize(self, text: str | bytes) -> str:
        """The normal form of ``text`` (str, or UTF-8 bytes; invalid UTF-8 -> ValueError with the
        byte offset)."""
        return str(self._impl.normalize(text))

    def normalize_many(self, texts: Sequence[str | bytes], num_threads: int = 0) -> list[str]:
        """``[normalize(t) for t in texts]`` in one native call."""
        return list(self._impl.normalize_many(texts, num_threads))

    def query_key(self, text: str | bytes) -> str:
        """The key of a query in query-keyed maps (the graph's query nodes): its normal form."""
        return str(self._impl.normalize(text))

    def query_keys(self, texts: Sequence[str | bytes], num_threads: int = 0) -> list[str]:
        """``[query_key(t) for t in texts]`` in one native call."""
        return list(self._impl.normalize_many(texts, num_threads))

    def query_terms_and_key(self, query: str, max_terms: int) -> tuple[np.ndarray, str]:
        """One query's term ids, int64 (max_terms,) zero-padded, and its `query_key`: the two native
        calls of a search's hot path, without `featurize`'s argument checks (a bad max_terms still
        raises in the core)."""
        return self._impl.featurize([query], max_terms, 1)[0], self._impl.normalize(query)

    def term_ids(self, text: str | bytes) -> np.ndarray:
        """All term ids of ``text``, untruncated: int64 (n_terms,), words then bigrams then
        trigrams."""
        return self._impl.term_ids(text)  # type: ignore[no-any-return]

    def featurize(
        self, texts: Sequence[str | bytes], max_terms: int | None = None, num_threads: int = 0
    ) -> np.ndarray:
        """Term ids of many texts: int64 (len(texts), max_terms), zero-padded; truncation drops
        terms from the end (trigrams first). ``max_terms`` defaults to ``config.max_query_terms``.

        ``texts``: a sequence of str / UTF-8 bytes, or a pyarrow string array / chunked array
        (read from its buffers without Python objects; nulls give all-padding rows)."""
        if max_terms is None:
            max_terms = self.config.max_query_terms
        max_terms = _check_int("max_terms", max_terms, 1, _MAX_TERMS)
        num_threads = _check_int("num_threads", num_threads, 0, 4096)
        if _is_arrow(texts):
            # pyarrow string columns are read in place from their buffers (nulls count as empty).
            column = _ArrowChunks(texts)
            out = np.empty((column.length, max_terms), dtype=np.int64)
            for start, offsets, data in column.parts:
                part = out[start : start + len(offsets) - 1]
                try:
                    self._impl.featurize_arrow(offsets, data, part, num_threads)
                except ValueError as err:
                    raise ValueError(f"pyarrow column rows from {start}: {err}") from None
            return out
        return self._impl.featurize(texts, max_terms, num_threads)  # type: ignore[no-any-return]

    def featurize_queries(self, texts: Sequence[str | bytes], num_threads: int = 0) -> np.ndarray:
        """``featurize(texts, config.max_query_terms)``: int64 (n, max_query_terms)."""
        return self.featurize(texts, self.config.max_query_terms, num_threads)

    def featurize_products(self, texts: Sequence[str | bytes], num_threads: int = 0) -> np.ndarray:
        """``featurize(texts, config.max_product_terms)``: int64 (n, max_product_terms)."""
        return self.featurize(texts, self.config.max_product_terms, num_threads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description; ``Featurizer.from_dict`` rebuilds an identical featurizer."""
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Featurizer:
        return cls(FeaturizerConfig.from_dict(data))

    def __reduce__(self) -> tuple[type[Featurizer], tuple[FeaturizerConfig]]:
        # Picklable, so DataLoader workers started by spawn get an identical featurizer.
        return (Featurizer, (self.config,))

    def __repr__(self) -> str:
        return f"Featurizer({self.config!r})"


class StringIdMap:
    """Immutable ``str -> row`` map in C++ (row i is ``keys[i]``; -1 for absent keys).

    Duplicate keys raise ValueError naming the key. Used for query -> graph node (keys are
    normalized queries, see ``Featurizer.query_key``), product_id -> row, user_id -> row.
    """

    __slots__ = ("_impl",)

    def __init__(self, keys: Sequence[str]) -> None:
        self._impl = _core.StringIdMap(keys)

    def lookup(self, keys: Sequence[str], num_threads: int = 0) -> np.ndarray:
        """Rows of ``keys``: int64 (len(keys),), -1 where absent. ``keys`` may also be a pyarrow
        string array / chunked array (read in place; nulls give -1)."""
        if _is_arrow(keys):
            num_threads = _check_int("num_threads", num_threads, 0, 4096)
            column = _ArrowChunks(keys)
            out = np.empty(column.length, dtype=np.int64)
            for start, offsets, data in column.parts:
                self._impl.lookup_arrow(offsets, data, out[start : start + len(offsets) - 1], num_threads)
            if keys.null_count:
                out[np.asarray(keys.is_null(), dtype=bool)] = -1
            return out
        return self._impl.lookup(keys, num_threads)  # type: ignore[no-any-return]

    def get(self, key: str) -> int:
        """The row of ``key``, -1 if absent."""
        return int(self._impl.get(key))

    def keys(self) -> list[str]:
        """The keys in row order."""
        return list(self._impl.keys())

    def keys_at(self, rows: np.ndarray) -> list[str]:
        """The keys of ``rows`` (int64 (n,), C-contiguous), in order. A row outside
        ``0 .. len(self) - 1`` raises IndexError naming it."""
        return self._impl.keys_at(rows)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._impl)

    def __contains__(self, key: object) -> bool:
        return bool(self._impl.__contains__(key))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __reduce__(self) -> tuple[type[StringIdMap], tuple[list[str]]]:
        return (StringIdMap, (self.keys(),))

    def __repr__(self) -> str:
        return f"StringIdMap(<{len(self)} keys>)"


def build_histories(
    event_user: np.ndarray,
    event_ts: np.ndarray,
    hist_user: np.ndarray,
    hist_ts: np.ndarray,
    hist_product: np.ndarray,
    hist_type: np.ndarray,
    hist_query: np.ndarray,
    n_products: int,
    n_queries: int,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each event's user history, strictly before the event's timestamp (no leakage).

    Args:
        event_user: int64 (n,) user rows; -1 = signed out (empty history).
        event_ts: int64 (n,) timestamps.
        hist_user: int64 (h,) user row of each log row; rows with -1 are ignored.
        hist_ts: int64 (h,) timestamps.
        hist_product: int64 (h,) product rows; -1 = none.
        hist_type: int8 (h,) interaction codes: 0 = impression / none, 1 = click, 2 = favorite,
            3 = add_to_cart, 4 = purchase. Other values raise ValueError.
        hist_query: int64 (h,) query-string rows (e.g. from a ``StringIdMap``); -1 = none.
        n_products: N, engaged products kept per event.
        n_queries: M, distinct recent queries kept per event.

    Returns:
        ``(products int64 (n, N) -1 padded, types int8 (n, N) 0 padded, queries int64 (n, M) -1
        padded)``, most recent first. Only rows with ``hist_ts < event_ts`` count (an equal
        timestamp is excluded); among equal timestamps a later log position is more recent.
        Products come from engagements (type 1..4, product >= 0), repeats kept; queries from every
        row with ``query >= 0`` (impressions included: the user searched it), each query once at
        its most recent use. O((n + h) log(n + h)) time; the GIL is released.
    """
    num_threads = _check_int("num_threads", num_threads, 0, 4096)
    n_products = _check_int("n_products", n_products, 0, 4096)
    n_queries = _check_int("n_queries", n_queries, 0, 4096)
    products, types, queries = _core.build_histories(
        event_user, event_ts, hist_user, hist_ts, hist_product, hist_type, hist_query,
        n_products, n_queries, num_threads,
    )
    return products, types, queries
