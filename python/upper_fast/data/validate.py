"""Validation with quarantine: every input row is accepted or quarantined with a reason.

`validate_dataset(root)` reads `catalog`, `users` (optional) and `search_log` in record batches,
checks every row, writes each rejected row to `<quarantine_dir>/<table>.quarantine.jsonl` (the
original row, file, row number, line, column, reason, detail) and returns the accepted tables and a
`ValidationReport` whose counts reconcile exactly: rows in = accepted + quarantined, per file and per
reason. A file that cannot be read raises `upper_fast.FormatError` naming the file, row and column.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from upper_fast.data.convert import (
    convert_id,
    convert_interaction,
    convert_number,
    convert_tags,
    convert_text,
    convert_timestamp,
)
from upper_fast.data.readers import SUPPORTED_SUFFIXES, RawBatch, file_row_count_hint, iter_batches
from upper_fast.data.schema import KNOWN_COLUMNS, REASONS, REQUIRED_COLUMNS, TABLES, DataConfig

__all__ = ["CatalogRowsError", "FileReport", "ValidationReport", "ValidatedTables", "validate_catalog_rows",
           "validate_dataset", "find_table_files", "iter_quarantine", "output_schema"]

_REASON_CODE = {r: i for i, r in enumerate(REASONS)}
_EXAMPLES_PER_REASON = 5


@dataclass
class FileReport:
    """Counts for one input file."""

    table: str
    file: str
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        return self.rows_in == self.accepted + self.quarantined and sum(self.by_reason.values()) == self.quarantined


@dataclass
class ValidationReport:
    """What happened to every input row, per file and per reason.

    `examples` keeps the first few quarantine records per reason (also when no quarantine
    directory was given); `quarantine_files` lists the JSONL files written.
    """

    files: list[FileReport] = field(default_factory=list)
    quality_columns: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    quarantine_files: list[str] = field(default_factory=list)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    simulated: bool = False

    @property
    def rows_in(self) -> int:
        return sum(f.rows_in for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    def by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.by_reason)
        return {r: total[r] for r in REASONS if total[r]}

    def reconciles(self) -> bool:
        """rows in == accepted + quarantined for every file, and the per-reason counts sum up."""
        return all(f.reconciles() for f in self.files) and sum(self.by_reason().values()) == self.quarantined

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulated": self.simulated,
            "rows_in": self.rows_in,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "reconciles": self.reconciles(),
            "by_reason": self.by_reason(),
            "files": [f.__dict__ | {"reconciles": f.reconciles()} for f in self.files],
            "quality_columns": self.quality_columns,
            "ignored_columns": self.ignored_columns,
            "quarantine_files": self.quarantine_files,
            "examples": self.examples,
        }

    def summary(self) -> str:
        """Human-readable table of the counts (says "simulated" for generated data)."""
        label = "simulated data" if self.simulated else "data"
        lines = [f"validation of {label}: {self.rows_in} rows in = {self.accepted} accepted + "
                 f"{self.quarantined} quarantined ({'reconciled' if self.reconciles() else 'DOES NOT RECONCILE'})"]
        for f in self.files:
            reasons = ", ".join(f"{r}={c}" for r, c in sorted(f.by_reason.items())) or "-"
            lines.append(f"  {f.table:<10} {f.file}: in {f.rows_in}, accepted {f.accepted}, "
                         f"quarantined {f.quarantined} ({reasons})")
        if self.quality_columns:
            lines.append(f"  quality columns: {', '.join(self.quality_columns)}")
        for table, cols in self.ignored_columns.items():
            lines.append(f"  ignored {table} columns (not in the schema, not numeric): {', '.join(cols)}")
        if self.quarantined and not self.quarantine_files:
            lines.append("  quarantined rows were counted but not written: pass a quarantine directory to keep them")
        for path in self.quarantine_files:
            lines.append(f"  quarantine: {path}")
        return "\n".join(lines)


@dataclass
class ValidatedTables:
    catalog: pa.Table
    users: pa.Table | None
    log: pa.Table


def output_schema(table: str, quality_columns: Sequence[str] = ()) -> pa.Schema:
    """The canonical Arrow schema of an accepted table."""
    if table == "catalog":
        return pa.schema(
            [("product_id", pa.string()), ("title", pa.string()), ("tags", pa.list_(pa.string())),
             ("category", pa.string()), ("shop_id", pa.string()), ("shop_country", pa.string()),
             ("price", pa.float64())] + [(q, pa.float64()) for q in quality_columns]
        )
    if table == "users":
        return pa.schema([("user_id", pa.string()), ("country", pa.string())])
    if table == "search_log":
        return pa.schema([("timestamp", pa.int64()), ("user_id", pa.string()), ("query", pa.string()),
                          ("product_id", pa.string()), ("interaction", pa.string()), ("country", pa.string())])
    raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")


def find_table_files(root: Path, table: str, config: DataConfig) -> list[Path]:
    """Files of one table: config `files`, else `<table>.<ext>`, else every file in `<table>/`."""
    if table in config.files:
        paths = [root / f for f in config.files[table]]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: file named for table {table!r} in the data config does not exist")
        return paths
    found = [root / f"{table}{suffix}" for suffix in SUPPORTED_SUFFIXES if (root / f"{table}{suffix}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{root}: several files for table {table!r} ({[p.name for p in found]}); "
                         f"name the one to read in the data config: {{\"files\": {{\"{table}\": [...]}}}}")
    if found:
        return found
    folder = root / table
    if folder.is_dir():
        parts = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if parts:
            return parts
    return []


class _Quarantine:
    """Writes quarantine records as JSONL (one file per table) and keeps a few examples."""

    def __init__(self, directory: Path | None, report: ValidationReport) -> None:
        self.directory = directory
        self.report = report
        self.handles: dict[str, Any] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def write(self, table: str, record: dict[str, Any]) -> None:
        examples = self.report.examples.setdefault(record["reason"], [])
        if len(examples) < _EXAMPLES_PER_REASON:
            examples.append(record)
        if self.directory is None:
            return
        fh = self.handles.get(table)
        if fh is None:
            path = self.directory / f"{table}.quarantine.jsonl"
            fh = self.handles[table] = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
            self.report.quarantine_files.append(str(path))
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()
        self.handles.clear()


class _TableValidator:
    """Validates the batches of one table, file by file, keeping cross-file state (duplicates)."""

    def __init__(self, table: str, config: DataConfig, report: ValidationReport, quarantine: _Quarantine,
                 catalog_ids: set[str] | None = None, keep: bool = True,
                 accepted_path: Path | None = None) -> None:
        self.table = table
        self.config = config
        self.report = report
        self.quarantine = quarantine
        self.catalog_ids = catalog_ids
        self.quality: list[str] | None = None if table == "catalog" and config.quality_columns is None else (
            list(config.quality_columns or []) if table == "catalog" else [])
        self.seen_ids: set[str] = set()
        self.seen_hashes = np.empty(0, np.int64)
        self.parts: list[pa.Table] = []
        self.columns_seen: set[str] = set()
        self.keep = keep
        self.accepted_path = accepted_path
        self.writer: Any = None

    # -- quality columns are fixed at the first batch of the table
    def _decide_quality(self, batch: RawBatch) -> None:
        if self.quality is not None:
            return
        known = set(KNOWN_COLUMNS["catalog"])
        quality: list[str] = []
        ignored: list[str] = []
        for name, values in batch.columns.items():
            if name in known:
                continue
            t = values.type if isinstance(values, (pa.Array, pa.ChunkedArray)) else None
            if t is not None and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) \
                    or pa.types.is_boolean(t)
            else:  # text (CSV, JSONL, Parquet strings): a quality column if mostly numbers
                _, missing, bad = convert_number(values, len(values))
                present = int((~missing).sum())
                numeric = present > 0 and bad.sum() < 0.5 * present  # mostly numbers: bad ones are errors
            (quality if numeric else ignored).append(name)
        self.quality = quality
        self.report.quality_columns = list(quality)
        if ignored:
            self.report.ignored_columns["catalog"] = ignored

    def validate_file(self, path: Path, progress: Any) -> FileReport:
        fr = FileReport(self.table, str(path))
        self.report.files.append(fr)
        required = REQUIRED_COLUMNS[self.table]
        if self.table == "search_log":
            required = tuple(c for c in required if c != "user_id")  # absent column: everyone signed out
        for batch in iter_batches(path, self.table, self.config, required):
            fr.rows_in += len(batch) + len(batch.rejected)
            records = [{"table": self.table, "file": str(path), "row": rej.row, "line": rej.line,
                        "reason": rej.reason, "column": rej.column, "detail": rej.detail, "original": rej.original}
                       for rej in batch.rejected]
            if len(batch):
                accepted = self._validate_batch(batch, records)
                fr.accepted += accepted.num_rows
                self._emit(accepted)
            for record in sorted(records, key=lambda r: r["row"]):  # quarantine file in input order
                self._quarantine(fr, record)
            progress.update(len(batch) + len(batch.rejected))
        if self.table != "catalog":
            extra = sorted(self.columns_seen - set(KNOWN_COLUMNS[self.table]))
            if extra:
                self.report.ignored_columns[self.table] = extra
        return fr

    def _quarantine(self, fr: FileReport, record: dict[str, Any]) -> None:
        fr.quarantined += 1
        fr.by_reason[record["reason"]] = fr.by_reason.get(record["reason"], 0) + 1
        self.quarantine.write(self.table, record)

    def _validate_batch(self, batch: RawBatch, records: list[dict[str, Any]]) -> pa.Table:
        """Check one batch; append a quarantine record per rejected row; return the accepted rows."""
        n = len(batch)
        cols = batch.columns
        self.columns_seen |= set(cols)
        reason = np.full(n, -1, np.int16)
        column: list[str | None] = [None] * n
        detail: dict[int, str] = {}

        def flag(mask: np.ndarray, why: str, col: str | None, text: str = "") -> None:
            new = mask & (reason < 0)
            if new.any():
                reason[new] = _REASON_CODE[why]
                for i in np.flatnonzero(new):
                    column[i] = col
                    if text:
                        detail[int(i)] = text

        out: dict[str, pa.Array] = {}
        if self.table == "catalog":
            self._decide_quality(batch)
            pid, miss_p, bad_p = convert_id(cols.get("product_id"), n)
            title, miss_t, bad_t = convert_text(cols.get("title"), n)
            flag(miss_p, "missing_required", "product_id")
            flag(miss_t, "missing_required", "title")
            flag(bad_p, "bad_type", "product_id", "id must be a string or an integer")
            flag(bad_t, "bad_type", "title", "title must be a string")
            out["product_id"], out["title"] = pid, title
            tags, _, bad_tags = convert_tags(cols.get("tags"), n, self.config.tags_separator)
            for name in ("category", "shop_id", "shop_country"):
                arr, _, bad = convert_id(cols.get(name), n)
                flag(bad, "bad_type", name, f"{name} must be a string or an integer")
                out[name] = arr
            price, _, bad_price = convert_number(cols.get("price"), n)
            flag(bad_price, "non_numeric_value", "price", "price is not a finite number")
            out["price"] = price
            for q in self.quality or []:
                arr, _, bad = convert_number(cols.get(q), n)
                flag(bad, "non_numeric_value", q, f"quality column {q!r} is not a finite number")
                out[q] = arr
            flag(bad_tags, "bad_tags", "tags",
                 f"expected a list of strings, a JSON list or a {self.config.tags_separator!r}-separated string")
            out["tags"] = tags
            self._flag_duplicate_ids(pid, reason, flag, "product_id")
        elif self.table == "users":
            uid, miss_u, bad_u = convert_id(cols.get("user_id"), n)
            flag(miss_u, "missing_required", "user_id")
            flag(bad_u, "bad_type", "user_id", "id must be a string or an integer")
            country, _, bad_c = convert_id(cols.get("country"), n)
            flag(bad_c, "bad_type", "country", "country must be a string")
            out["user_id"], out["country"] = uid, country
            self._flag_duplicate_ids(uid, reason, flag, "user_id")
        else:
            ts, miss_ts, bad_ts = convert_timestamp(cols.get("timestamp"), n)
            uid, _, bad_u = convert_id(cols.get("user_id"), n)
            query, miss_q, bad_q = convert_text(cols.get("query"), n)
            pid, miss_p, bad_p = convert_id(cols.get("product_id"), n)
            inter, miss_i, bad_i = convert_interaction(cols.get("interaction"), n)
            country, _, bad_c = convert_id(cols.get("country"), n)
            raw_query = cols.get("query")
            # a whitespace-only query is "empty", not "missing": the field was there
            if isinstance(raw_query, (pa.Array, pa.ChunkedArray)):
                present = np.asarray(raw_query.is_valid().to_numpy(zero_copy_only=False), bool)
            elif raw_query is not None:
                present = np.fromiter((v is not None for v in raw_query), bool, n)
            else:
                present = np.zeros(n, bool)
            flag(miss_ts, "missing_required", "timestamp")
            flag(miss_q & ~present, "missing_required", "query")
            flag(miss_p, "missing_required", "product_id")
            flag(miss_i, "missing_required", "interaction")
            flag(bad_ts, "bad_timestamp", "timestamp",
                 "expected int seconds, ISO-8601 or an Arrow timestamp in 1970..2200 (milliseconds?)")
            for bad, name in ((bad_u, "user_id"), (bad_q, "query"), (bad_p, "product_id"), (bad_c, "country")):
                flag(bad, "bad_type", name, f"{name} must be a string" + (" or an integer" if name.endswith("id") else ""))
            flag(miss_q & present, "empty_query", "query")
            qlen = np.asarray(pc.fill_null(pc.utf8_length(query), 0).to_numpy(zero_copy_only=False))
            flag(qlen > self.config.max_query_chars, "query_too_long", "query",
                 f"query longer than {self.config.max_query_chars} characters (max_query_chars)")
            flag(bad_i, "unknown_interaction", "interaction", "expected one of impression, click, favorite, "
                 "add_to_cart, purchase (or codes 0..4)")
            if self.catalog_ids is not None:
                # a Python set built once: pc.is_in would rebuild its hash table for every batch
                ids = self.catalog_ids
                known = np.fromiter((v in ids for v in pid.to_pylist()), bool, n)
                flag(~known, "unknown_product", "product_id", "product_id is not in the accepted catalog")
            out.update(timestamp=pa.array(ts, pa.int64()), user_id=uid, query=query, product_id=pid,
                       interaction=inter, country=country)
            ok = reason < 0
            if ok.any():
                idx = np.flatnonzero(ok)
                t_l, u_l, q_l, p_l, i_l = (ts[idx].tolist(), uid.take(idx).to_pylist(), query.take(idx).to_pylist(),
                                           pid.take(idx).to_pylist(), inter.take(idx).to_pylist())
                hashes = np.fromiter((hash(k) for k in zip(t_l, u_l, q_l, p_l, i_l)), np.int64, len(idx))
                dup = self._duplicate_hashes(hashes)
                flag(np.isin(np.arange(n), idx[dup]), "duplicate", None, "repeats an earlier accepted event")

        bad_rows = np.flatnonzero(reason >= 0)
        for i in bad_rows:
            records.append({
                "table": self.table, "file": batch.file, "row": batch.rows[i],
                "line": batch.lines[i] if batch.lines is not None else None,
                "reason": REASONS[reason[i]], "column": column[i], "detail": detail.get(int(i), ""),
                "original": batch.original(int(i)),
            })
        keep = pa.array(np.flatnonzero(reason < 0), pa.int64())
        schema = output_schema(self.table, self.quality or [])
        return pa.Table.from_arrays([out[name].take(keep) for name in schema.names], schema=schema)

    def _flag_duplicate_ids(self, ids: pa.Array, reason: np.ndarray, flag: Any, col: str) -> None:
        values = ids.to_pylist()
        dup = np.zeros(len(values), bool)
        for i, v in enumerate(values):
            if reason[i] >= 0 or v is None:
                continue
            if v in self.seen_ids:
                dup[i] = True
            else:
                self.seen_ids.add(v)
        flag(dup, "duplicate", col, f"{col} already accepted earlier")

    def _duplicate_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """Mask of hashes seen before (in earlier batches or earlier in this one); records the rest."""
        dup = np.zeros(len(hashes), bool)
        _, first = np.unique(hashes, return_index=True)
        dup[:] = True
        dup[first] = False
        if len(self.seen_hashes):
            pos = np.searchsorted(self.seen_hashes, hashes)
            pos[pos == len(self.seen_hashes)] = 0
            dup |= self.seen_hashes[pos] == hashes
        # new hashes are distinct and unseen: a stable (radix) sort of the concatenation keeps the set sorted
        self.seen_hashes = np.sort(np.concatenate([self.seen_hashes, hashes[~dup]]), kind="stable")
        return dup

    def _emit(self, accepted: pa.Table) -> None:
        if self.accepted_path is not None:
            import pyarrow.parquet as pq

            if self.writer is None:
                self.writer = pq.ParquetWriter(self.accepted_path, accepted.schema)
            self.writer.write_table(accepted)
        if self.keep:
            self.parts.append(accepted)

    def result(self) -> pa.Table:
        """The accepted rows (empty when keep=False); closes the accepted-rows Parquet writer."""
        schema = output_schema(self.table, self.quality or [])
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        elif self.accepted_path is not None:
            import pyarrow.parquet as pq

            pq.write_table(schema.empty_table(), self.accepted_path)
        if not self.parts:
            return schema.empty_table()
        return pa.concat_tables(self.parts)


def validate_dataset(
    root: str | Path,
    config: DataConfig | dict[str, Any] | str | Path | None = None,
    quarantine_dir: str | Path | None = None,
    progress: bool = True,
    simulated: bool = False,
    accepted_dir: str | Path | None = None,
    keep_log: bool = True,
) -> tuple[ValidatedTables, ValidationReport]:
    """Validate the catalog, users (optional) and search log under `root`.

    Returns the accepted tables (in file order; `load_dataset` sorts the log) and the report.
    `accepted_dir`: also write the accepted rows incrementally to `<accepted_dir>/<table>.parquet`.
    `keep_log=False` does not hold the accepted log in memory (the returned log is empty): with
    `accepted_dir` this streams a log of any size in bounded memory.
    Raises FileNotFoundError when a required table has no file, `upper_fast.FormatError` for an
    unusable file.
    """
    from tqdm.auto import tqdm

    cfg = DataConfig.from_any(config)
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: expected a dataset directory holding catalog, search_log "
                                 f"(and optionally users) files")
    files = {t: find_table_files(root, t, cfg) for t in TABLES}
    for table in ("catalog", "search_log"):
        if not files[table]:
            raise FileNotFoundError(
                f"{root}: no {table} file: expected {table}.parquet, {table}.csv, {table}.jsonl or a {table}/ folder"
            )
    report = ValidationReport(simulated=simulated)
    quarantine = _Quarantine(Path(quarantine_dir) if quarantine_dir is not None else None, report)
    out_dir = Path(accepted_dir) if accepted_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    hints = [file_row_count_hint(p) for t in TABLES for p in files[t]]
    total = sum(h for h in hints if h is not None) if all(h is not None for h in hints) else None
    bar = tqdm(total=total, unit=" rows", desc="validate" + (" (simulated)" if simulated else ""),
               disable=not progress, leave=False)
    try:
        tables: dict[str, pa.Table | None] = {}
        catalog_ids: set[str] | None = None
        for table in TABLES:
            if not files[table]:
                tables[table] = None
                continue
            validator = _TableValidator(
                table, cfg, report, quarantine, catalog_ids, keep=keep_log or table != "search_log",
                accepted_path=out_dir / f"{table}.parquet" if out_dir is not None else None,
            )
            for path in files[table]:
                validator.validate_file(path, bar)
            tables[table] = validator.result()
            if table == "catalog":
                catalog_ids = set(tables[table].column("product_id").to_pylist())
    finally:
        bar.close()
        quarantine.close()
    if not report.reconciles():  # an internal invariant: a failure here is a bug, never user error
        raise AssertionError(f"validation counts do not reconcile:\n{report.summary()}")
    assert tables["catalog"] is not None and tables["search_log"] is not None
    return ValidatedTables(tables["catalog"], tables["users"], tables["search_log"]), report


def iter_quarantine(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read a quarantine JSONL file back."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


class CatalogRowsError(ValueError):
    """Catalogue rows refused by `validate_catalog_rows`.

    records: one record per rejected row, with the fields `upper-fast validate` writes to its
    quarantine file (table, row (1-based), column, reason, detail, original). Empty when the whole
    batch was refused for its columns (`unknown_columns`)."""

    def __init__(self, message: str, records: list[dict[str, Any]], unknown_columns: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.records = records
        self.unknown_columns = list(unknown_columns)


def _rows_batch(rows: Any) -> RawBatch:
    """In-memory catalogue rows (a pyarrow Table / RecordBatch or a list of dicts) as a reader batch."""
    from upper_fast.data.readers import _json_safe, _parquet_row, _typed_or_list

    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        batch = rows.combine_chunks().to_batches()[0] if rows.num_rows else None
        columns = {name: rows.column(name).combine_chunks() for name in rows.column_names}
        return RawBatch("<rows>", columns, list(range(1, rows.num_rows + 1)), None,
                        lambda i, _b=batch: _parquet_row(_b, i))
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a pyarrow Table or a list of dicts in the catalog schema, not {type(rows).__name__}")
    for i, rec in enumerate(rows):
        if not isinstance(rec, dict):
            raise TypeError(f"rows[{i}] is a {type(rec).__name__}; each row must be a dict of column -> value")
    names: dict[str, None] = {}
    for rec in rows:
        names.update(dict.fromkeys(map(str, rec)))
    columns = {name: _typed_or_list([rec.get(name) for rec in rows]) for name in names}
    return RawBatch("<rows>", columns, list(range(1, len(rows) + 1)), None, lambda i: _json_safe(rows[i]))


def validate_catalog_rows(rows: Any, quality_columns: Sequence[str], config: DataConfig | None = None) -> pa.Table:
    """Check in-memory catalogue rows with the checks of `upper-fast validate` (the same code), all
    or nothing: returns every row in the canonical catalog schema (`output_schema("catalog",
    quality_columns)`), or raises `CatalogRowsError` naming each rejected row, its column, reason and
    detail. Columns outside the catalog schema and `quality_columns` are refused (a typo would
    otherwise drop a field silently). Duplicate product_ids within the rows are rejected."""
    batch = _rows_batch(rows)
    known = set(KNOWN_COLUMNS["catalog"]) | set(quality_columns)
    unknown = sorted(set(batch.columns) - known)
    if unknown:
        raise CatalogRowsError(
            f"unknown catalog columns {unknown}: this bundle reads {list(KNOWN_COLUMNS['catalog'])} and the quality "
            f"columns {list(quality_columns)}; drop or rename them (nothing was applied)", [], unknown)
    cfg = dataclasses.replace(config or DataConfig(), quality_columns=list(quality_columns))
    report = ValidationReport()
    validator = _TableValidator("catalog", cfg, report, _Quarantine(None, report))
    records: list[dict[str, Any]] = []
    accepted = validator._validate_batch(batch, records) if len(batch) else output_schema("catalog", quality_columns).empty_table()
    if records:
        records.sort(key=lambda r: r["row"])
        shown = "; ".join(f"row {r['row']}: {r['reason']} in column {r['column']!r}" + (f" ({r['detail']})" if r["detail"] else "")
                          for r in records[:10])
        more = f"; and {len(records) - 10} more" if len(records) > 10 else ""
        raise CatalogRowsError(f"{len(records)} of {len(batch)} catalogue rows rejected, nothing was applied "
                               f"(the checks of `upper-fast validate`): {shown}{more}", records)
    return accepted
