"""Streaming readers for Parquet, CSV and JSONL files, in bounded-memory record batches.

Each reader yields `RawBatch`es: column values under their canonical names (a `pyarrow.Array` from
Parquet, a Python list from CSV/JSONL), each row's 1-based record number, and the rows the reader
itself had to reject (a CSV row with the wrong field count, a JSONL line that is not JSON, bytes that
are not UTF-8). CSV and JSONL are read as bytes, so one bad line is rejected, not the whole file.
A file that cannot be read at all raises `upper_fast.FormatError` naming the file, row and column.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from upper_fast._core import FormatError
from upper_fast.data.schema import DataConfig

__all__ = ["RawBatch", "RejectedRow", "SUPPORTED_SUFFIXES", "iter_batches", "file_row_count_hint"]

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


@dataclass
class RejectedRow:
    """A row the reader could not turn into fields."""

    row: int                      # 1-based record number in the file
    line: int | None              # physical line number (CSV/JSONL)
    original: Any                 # the original row (dict) or line text (invalid bytes as \\xNN)
    reason: str                   # a key of schema.REASONS
    column: str | None = None
    detail: str = ""


@dataclass
class RawBatch:
    """Up to `batch_rows` rows of one file, before validation.

    columns: canonical name -> `pa.Array` (Parquet) or list of Python values (CSV/JSONL); missing
        columns are absent. All columns have len(rows) entries.
    rows: 1-based record numbers, list[int] of length n.
    lines: physical line numbers (CSV/JSONL) or None (Parquet).
    original: i -> the original row i of this batch as a JSON-serialisable dict (source names).
    rejected: rows the reader rejected; they are not in `columns`.
    """

    file: str
    columns: dict[str, Any]
    rows: list[int]
    lines: list[int] | None
    original: Callable[[int], dict[str, Any]]
    rejected: list[RejectedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def file_format(path: Path) -> str:
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(
            f"{path}: unsupported file type {path.suffix!r}; expected one of {sorted(SUPPORTED_SUFFIXES)}"
        )
    return fmt


def file_row_count_hint(path: Path) -> int | None:
    """Row count from Parquet metadata (for the progress bar); None for text formats."""
    if file_format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # an unreadable file is reported by iter_batches with its reason
        return None


def iter_batches(
    path: Path, table: str, config: DataConfig, required: tuple[str, ...]
) -> Iterator[RawBatch]:
    """Yield the file's rows in record batches; raise FormatError if the file is unusable."""
    fmt = file_format(path)
    if fmt == "parquet":
        yield from _iter_parquet(path, table, config, required)
    elif fmt == "csv":
        yield from _iter_csv(path, table, config, required)
    else:
        yield from _iter_jsonl(path, table, config, required)


def _check_header(path: Path, table: str, source: list[str], canonical: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in canonical]
    if missing:
        raise FormatError(
            f"{path}: row 0 (header): missing required column {missing[0]!r} for table {table!r} "
            f"(columns found: {source}); map your column with a config like "
            f'{{"{table}": {{"<your column>": "{missing[0]}"}}}}'
        )
    seen: set[str] = set()
    for name in canonical:
        if name in seen:
            raise FormatError(f"{path}: row 0 (header): column {name!r} appears twice (after column mapping)")
        seen.add(name)


def _json_safe(value: Any) -> Any:
    """A JSON-serialisable form of a value for the quarantine file."""
    if isinstance(value, str):
        return _visible(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    return str(value)


def _visible(text: str) -> str:
    """Undo surrogateescape: bytes that were not UTF-8 are shown as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def _has_bad_bytes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


# ---------------------------------------------------------------- Parquet
def _parquet_row(batch: pa.RecordBatch, i: int) -> dict[str, Any]:
    return {k: _json_safe(v) for k, v in batch.slice(i, 1).to_pylist()[0].items()}


def _iter_parquet(path: Path, table: str, config: DataConfig, required: tuple[str, ...]) -> Iterator[RawBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        source = list(pf.schema_arrow.names)
    except Exception as exc:
        raise FormatError(f"{path}: unreadable Parquet file (row 0, no column): {exc}") from None
    canonical = config.rename(table, source)
    _check_header(path, table, source, canonical, required)
    first = 1
    batches = pf.iter_batches(batch_size=config.batch_rows)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            raise FormatError(f"{path}: unreadable Parquet data at or after row {first}: {exc}") from None
        n = batch.num_rows
        columns: dict[str, Any] = {}
        bad_utf8: set[int] = set()
        bad_column: dict[int, str] = {}
        raw_cols: list[pa.Array] = []  # invalid string columns as binary, so originals can be shown
        for name, src, col in zip(canonical, source, batch.columns):
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                try:
                    col.validate(full=True)
                except pa.ArrowInvalid:
                    col = col.view(pa.binary() if pa.types.is_string(col.type) else pa.large_binary())
            raw_cols.append(col)
            if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                values = col.to_pylist()
                decoded: list[str | None] = []
                for i, v in enumerate(values):
                    if v is None:
                        decoded.append(None)
                        continue
                    try:
                        decoded.append(v.decode("utf-8"))
                    except UnicodeDecodeError:
                        decoded.append(None)
                        bad_utf8.add(i)
                        bad_column.setdefault(i, src)
                columns[name] = pa.array(decoded, type=pa.string())
            else:
                columns[name] = col

        batch = pa.RecordBatch.from_arrays(raw_cols, names=source)
        rows = list(range(first, first + n))
        rejected = [
            RejectedRow(rows[i], None, _parquet_row(batch, i), "invalid_utf8", bad_column[i],
                        "value is not valid UTF-8")
            for i in sorted(bad_utf8)
        ]
        kept = batch
        if bad_utf8:
            keep = pa.array([i for i in range(n) if i not in bad_utf8], type=pa.int64())
            columns = {k: v.take(keep) for k, v in columns.items()}
            kept = batch.take(keep)
            rows = [rows[i] for i in keep.to_pylist()]
        original = (lambda i, _b=kept: _parquet_row(_b, i))
        yield RawBatch(str(path), columns, rows, None, original, rejected)
        first += n


# ---------------------------------------------------------------- CSV
def _iter_csv(path: Path, table: str, config: DataConfig, required: tuple[str, ...]) -> Iterator[RawBatch]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise FormatError(f"{path}: cannot open: {exc}") from None
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad field fails one row.
    with io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="") as text:
        if text.read(1) != "\ufeff":  # skip a UTF-8 byte-order mark
            text.seek(0)
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise FormatError(f"{path}: row 0 (header): empty CSV file, expected a header row") from None
        except csv.Error as exc:
            raise FormatError(f"{path}: row 0 (header), line 1: unparseable CSV header: {exc}") from None
        if any(_has_bad_bytes(h) for h in header):
            raise FormatError(f"{path}: row 0 (header): column names are not valid UTF-8: {[_visible(h) for h in header]}")
        source = [h.strip() for h in header]
        canonical = config.rename(table, source)
        _check_header(path, table, source, canonical, required)
        width = len(source)
        row_no = 0
        while True:
            good: list[list[str]] = []
            rows: list[int] = []
            lines: list[int] = []
            rejected: list[RejectedRow] = []
            while len(rows) < config.batch_rows:
                start_line = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise FormatError(
                        f"{path}: row {row_no + 1}, line {start_line}: unparseable CSV ({exc}); "
                        f"check quoting around that line"
                    ) from None
                if not fields:  # a blank line is not a record
                    continue
                row_no += 1
                if len(fields) != width:
                    rejected.append(RejectedRow(
                        row_no, start_line, {"fields": [_visible(f) for f in fields]}, "malformed_row", None,
                        f"{len(fields)} fields, header has {width}",
                    ))
                    continue
                if _has_bad_bytes("".join(fields)):  # one encode per row; find the field only when bad
                    bad = next(i for i, f in enumerate(fields) if _has_bad_bytes(f))
                    rejected.append(RejectedRow(
                        row_no, start_line, {s: _visible(f) for s, f in zip(source, fields)}, "invalid_utf8",
                        source[bad], "value is not valid UTF-8",
                    ))
                    continue
                good.append(fields)
                rows.append(row_no)
                lines.append(start_line)
            if not rows and not rejected:
                return
            # CSV fields are all text: as Arrow string arrays (empty -> null) they take the vectorised
            # conversions
            columns: dict[str, Any] = {}
            for name, col in zip(canonical, zip(*good) if good else [() for _ in canonical]):
                arr = pa.array(col, pa.string())
                columns[name] = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
            yield RawBatch(str(path), columns, rows, lines,
                           lambda i, _g=good: dict(zip(source, _g[i])), rejected)


# ---------------------------------------------------------------- JSONL
def _typed_or_list(values: list[Any]) -> Any:
    """A JSON column as an Arrow array when its values share one safe type (vectorised checks),
    else the list itself (per-value checks). Floats stay lists: an id 1 beside 1.5 must not become 1.0."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return values
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_integer(t) or pa.types.is_null(t) or (
        pa.types.is_list(t) and pa.types.is_string(t.value_type)
    ):
        return arr
    return values



def _iter_jsonl(path: Path, table: str, config: DataConfig, required: tuple[str, ...]) -> Iterator[RawBatch]:
    mapping = config.columns.get(table, {})
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise FormatError(f"{path}: cannot open: {exc}") from None
    with fh:
        row_no = 0
        line_no = 0
        first_batch = True
        while True:
            records: list[dict[str, Any]] = []
            rows: list[int] = []
            lines: list[int] = []
            rejected: list[RejectedRow] = []
            while len(rows) < config.batch_rows:
                raw = fh.readline()
                if not raw:
                    break
                line_no += 1
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():  # a blank line is not a record
                    continue
                row_no += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    rejected.append(RejectedRow(row_no, line_no, raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n"),
                                                "invalid_utf8", None, f"bytes are not UTF-8 at offset {exc.start}"))
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    rejected.append(RejectedRow(row_no, line_no, text.rstrip("\r\n"), "invalid_json", None, str(exc)))
                    continue
                if not isinstance(record, dict):
                    rejected.append(RejectedRow(row_no, line_no, _json_safe(record), "malformed_row", None,
                                                f"line is a JSON {type(record).__name__}, expected an object"))
                    continue
                if any(_has_bad_bytes(v) for v in record.values() if isinstance(v, str)):
                    # JSON \ud800-style escapes decode to lone surrogates: not valid UTF-8 text.
                    rejected.append(RejectedRow(row_no, line_no, _json_safe(record), "invalid_utf8", None,
                                                "string contains an unpaired surrogate escape"))
                    continue
                records.append(record)
                rows.append(row_no)
                lines.append(line_no)
            if not rows and not rejected:
                return
            present: dict[str, str] = {}
            for rec in records:
                for key in rec:
                    if key not in present:
                        present[key] = mapping.get(key, key)
            if first_batch and records:
                _check_header(path, table, list(present), list(present.values()), required)
            first_batch = False
            columns: dict[str, Any] = {}
            for src, name in present.items():
                if name in columns:
                    raise FormatError(f"{path}: line {lines[0]}: column {name!r} appears twice (after column mapping)")
                columns[name] = _typed_or_list([rec.get(src) for rec in records])
            yield RawBatch(str(path), columns, rows, lines, lambda i, _r=records: _json_safe(_r[i]), rejected)
