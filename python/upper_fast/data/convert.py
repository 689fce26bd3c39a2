"""Column converters: raw values (a `pa.Array` or a list of Python values) -> typed values + masks.

Each converter returns the typed column and boolean masks of length n: `missing` (null or empty)
and `bad` (present but not convertible). Arrow inputs of the right type take a vectorised path;
text inputs (CSV, JSONL, mixed types) fall back to a per-value path.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from upper_fast.data.schema import INTERACTIONS

__all__ = [
    "TS_MIN",
    "TS_MAX",
    "convert_id",
    "convert_text",
    "convert_timestamp",
    "convert_number",
    "convert_interaction",
    "convert_tags",
    "parse_timestamp",
]

# Accepted timestamp range in seconds: 1970-01-01 .. 2200-01-01 (a 13-digit value is milliseconds).
TS_MIN = 0
TS_MAX = 7_258_118_400
_INT_RE = re.compile(r"^[+-]?\d+$")


def _is_arrow(values: Any) -> bool:
    return isinstance(values, (pa.Array, pa.ChunkedArray))


def _to_list(values: Any) -> list[Any]:
    return values.to_pylist() if _is_arrow(values) else values


def _null_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def convert_id(values: Any, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Ids as trimmed strings; integers become their decimal string; floats, bools, lists are bad."""
    return _convert_str(values, n, allow_float=False)


def convert_text(values: Any, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Free text (title, query, category, country) as trimmed strings; empty -> missing."""
    return _convert_str(values, n, allow_float=False)


def _convert_str(values: Any, n: int, allow_float: bool) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    if values is None:
        return pa.nulls(n, pa.string()), np.ones(n, bool), np.zeros(n, bool)
    if _is_arrow(values):
        t = values.type
        if pa.types.is_null(t):
            return pa.nulls(n, pa.string()), np.ones(n, bool), np.zeros(n, bool)
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_dictionary(t):
            arr = values.cast(pa.string())
            arr = pc.utf8_trim_whitespace(arr)
            empty = pc.fill_null(pc.equal(pc.utf8_length(arr), 0), True)
            missing = np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
            arr = pc.if_else(empty, pa.scalar(None, pa.string()), arr)
            return arr, missing, np.zeros(n, bool)
    out: list[str | None] = []
    missing = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    for i, v in enumerate(_to_list(values)):
        if v is None:
            missing[i] = True
            out.append(None)
        elif isinstance(v, str):
            s = v.strip()
            if s:
                out.append(s)
            else:
                missing[i] = True
                out.append(None)
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(str(v))
        else:
            bad[i] = True
            out.append(None)
    return pa.array(out, type=pa.string()), missing, bad


def parse_timestamp(value: Any) -> int | None:
    """One value -> int seconds since the epoch, or None if it is not a timestamp.

    Accepts int seconds, an integral string, a finite float (floored), an ISO-8601 string (naive
    means UTC), a datetime.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return math.floor(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return math.floor(dt.timestamp())
    if isinstance(value, str):
        s = value.strip()
        if _INT_RE.match(s):
            return int(s)
        try:
            dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return math.floor(dt.timestamp())
    return None


def convert_timestamp(values: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps -> int64 (n,) seconds since the epoch (0 where missing or bad)."""
    out = np.zeros(n, np.int64)
    if values is None:
        return out, np.ones(n, bool), np.zeros(n, bool)
    if _is_arrow(values):
        t = values.type
        fast: pa.Array | None = None
        if pa.types.is_timestamp(t):
            unit = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
            raw = values.cast(pa.int64())
            ints = raw.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            # floor division so pre-epoch sub-second values land in the right second
            fast = pa.array(np.floor_divide(ints, unit), mask=_null_mask(raw))
        elif pa.types.is_date32(t) or pa.types.is_date64(t):
            days = values.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
            fast = pc.multiply(days, 86400)
        elif pa.types.is_integer(t):
            fast = values.cast(pa.int64())
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            try:
                fast = pc.utf8_trim_whitespace(values).cast(pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                fast = None
        if fast is not None:
            missing = _null_mask(fast)
            out = fast.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False).copy()
            bad = ~missing & ((out < TS_MIN) | (out >= TS_MAX))
            out[bad] = 0
            return out, missing, bad
    missing = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    for i, v in enumerate(_to_list(values)):
        if v is None or (isinstance(v, str) and not v.strip()):
            missing[i] = True
            continue
        ts = parse_timestamp(v)
        if ts is None or not (TS_MIN <= ts < TS_MAX):
            bad[i] = True
        else:
            out[i] = ts
    return out, missing, bad


def convert_number(values: Any, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Numbers -> float64 array (null where missing); text that is not a number, or +-inf, is bad."""
    if values is None:
        return pa.nulls(n, pa.float64()), np.ones(n, bool), np.zeros(n, bool)
    arr: pa.Array | None = None
    if _is_arrow(values):
        t = values.type
        if pa.types.is_null(t):
            return pa.nulls(n, pa.float64()), np.ones(n, bool), np.zeros(n, bool)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
            arr = values.cast(pa.float64())
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            try:
                trimmed = pc.utf8_trim_whitespace(values)
                trimmed = pc.if_else(pc.equal(pc.utf8_length(trimmed), 0), pa.scalar(None, pa.string()), trimmed)
                arr = trimmed.cast(pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                arr = None
    if arr is not None:
        vals = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        missing = _null_mask(arr) | np.isnan(vals)
        bad = np.isinf(vals)
        if bad.any() or missing.any():
            vals = vals.copy()
            vals[bad | missing] = np.nan
        return pa.array(vals, type=pa.float64(), from_pandas=True), missing, bad
    vals = np.full(n, np.nan)
    missing = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    for i, v in enumerate(_to_list(values)):
        if v is None:
            missing[i] = True
            continue
        if isinstance(v, (bool, int, float)):
            x = float(v)
        elif isinstance(v, str):
            s = v.strip()
            if not s:
                missing[i] = True
                continue
            try:
                x = float(s)
            except ValueError:
                bad[i] = True
                continue
        else:
            bad[i] = True
            continue
        if math.isnan(x):
            missing[i] = True
        elif math.isinf(x):
            bad[i] = True
        else:
            vals[i] = x
    return pa.array(vals, type=pa.float64(), from_pandas=True), missing, bad


# names, then their codes as text ("0".."4"), each mapping to the name at the same index mod 5
_INTERACTION_KEYS = pa.array(list(INTERACTIONS) + [str(i) for i in range(len(INTERACTIONS))], type=pa.string())
_INTERACTION_NAMES_TWICE = pa.array(list(INTERACTIONS) * 2, type=pa.string())


def convert_interaction(values: Any, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Interaction names (case-insensitive) or codes 0..4 -> the lower-case name."""
    if values is None:
        return pa.nulls(n, pa.string()), np.ones(n, bool), np.zeros(n, bool)
    if _is_arrow(values) and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
                              or pa.types.is_dictionary(values.type)):
        arr = pc.utf8_lower(pc.utf8_trim_whitespace(values.cast(pa.string())))
        missing = np.asarray(pc.fill_null(pc.equal(pc.utf8_length(arr), 0), True).to_numpy(zero_copy_only=False), bool)
        idx = pc.index_in(arr, value_set=_INTERACTION_KEYS)
        known = np.asarray(idx.is_valid().to_numpy(zero_copy_only=False), bool)
        bad = ~missing & ~known
        return _INTERACTION_NAMES_TWICE.take(idx), missing, bad
    out: list[str | None] = []
    missing = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    for i, v in enumerate(_to_list(values)):
        name: str | None = None
        if v is None or (isinstance(v, str) and not v.strip()):
            missing[i] = True
        elif isinstance(v, str):
            s = v.strip().lower()
            if s in INTERACTIONS:
                name = s
            elif _INT_RE.match(s) and 0 <= int(s) < len(INTERACTIONS):
                name = INTERACTIONS[int(s)]
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(INTERACTIONS):
            name = INTERACTIONS[v]
        if name is None and not missing[i]:
            bad[i] = True
        out.append(name)
    return pa.array(out, type=pa.string()), missing, bad


def convert_tags(values: Any, n: int, separator: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Tags -> list<string>: a list of strings, a JSON list string, or a `separator`-joined string.

    Missing tags are an empty list (tags are optional), never a reason to reject the row.
    """
    if values is None:
        return pa.array([[] for _ in range(n)], type=pa.list_(pa.string())), np.zeros(n, bool), np.zeros(n, bool)
    if _is_arrow(values) and (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)) and (
        pa.types.is_string(values.type.value_type) or pa.types.is_large_string(values.type.value_type)
    ):
        arr = values.cast(pa.list_(pa.string())).fill_null([])
        return arr, np.zeros(n, bool), np.zeros(n, bool)
    out: list[list[str]] = []
    bad = np.zeros(n, bool)
    for i, v in enumerate(_to_list(values)):
        tags: list[str] | None
        if v is None:
            tags = []
        elif isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                try:
                    parsed = json.loads(s)
                except json.JSONDecodeError:
                    parsed = None
                tags = parsed if isinstance(parsed, list) and all(isinstance(t, str) for t in parsed) else None
            else:
                tags = s.split(separator)
        elif isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v):
            tags = list(v)
        else:
            tags = None
        if tags is None:
            bad[i] = True
            out.append([])
        else:
            out.append([t.strip() for t in tags if t.strip()])
    return pa.array(out, type=pa.list_(pa.string())), np.zeros(n, bool), bad
