"""Validation: every rule, exact reconciliation, malformed files, column mapping (CSV, JSONL, Parquet)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import upper_fast
from upper_fast.data import DataConfig, load_dataset, validate_dataset
from upper_fast.data.convert import convert_timestamp, parse_timestamp
from upper_fast.data.validate import iter_quarantine

CATALOG = [
    {"product_id": "p1", "title": "Sterling Silver Necklace", "tags": "silver|necklace", "category": "jewelry",
     "shop_id": "s1", "shop_country": "US", "price": "25.0", "rating": "4.5"},
    {"product_id": "p2", "title": "Solid Oak Couch", "tags": "", "category": "furniture",
     "shop_id": "s2", "shop_country": "GB", "price": "300", "rating": "3.9"},
    {"product_id": "p3", "title": "Linen Throw Pillow", "tags": '["linen", "pillow"]', "category": "home decor",
     "shop_id": "s1", "shop_country": "US", "price": "", "rating": ""},
    # rejected catalog rows
    {"product_id": "p1", "title": "Duplicate id", "tags": "", "category": "", "shop_id": "", "shop_country": "",
     "price": "1", "rating": "4"},                                                     # duplicate
    {"product_id": "p4", "title": "  ", "tags": "", "category": "", "shop_id": "", "shop_country": "",
     "price": "1", "rating": "4"},                                                     # missing_required (title)
    {"product_id": "p5", "title": "Walnut Bookcase", "tags": "", "category": "", "shop_id": "", "shop_country": "",
     "price": "cheap", "rating": "4"},                                                 # non_numeric_value (price)
    {"product_id": "p6", "title": "Glass Vase", "tags": "", "category": "", "shop_id": "", "shop_country": "",
     "price": "3", "rating": "five stars"},                                            # non_numeric_value (rating)
]
CATALOG_REASONS = Counter({"duplicate": 1, "missing_required": 1, "non_numeric_value": 2})

GOOD_LOG = [
    ("1700000000", "u1", "silver necklace", "p1", "click", "US"),
    ("2023-11-14T22:13:21Z", "", "oak couch", "p2", "impression", ""),
    ("2023-11-14T23:13:22+01:00", "u2", "linen pillow", "p3", "PURCHASE", "GB"),
    ("1700000003", "u2", "gift", "p1", "4", ""),                                        # interaction code
    ("1700000004", "u3", "necklace", "p1", "add_to_cart", "DE"),
]
BAD_LOG = [
    (("1700000010", "u1", "necklace", "", "click", ""), "missing_required"),
    (("", "u1", "necklace", "p1", "click", ""), "missing_required"),
    (("yesterday", "u1", "necklace", "p1", "click", ""), "bad_timestamp"),
    (("1700000000000", "u1", "necklace", "p1", "click", ""), "bad_timestamp"),         # milliseconds
    (("1700000011", "u1", "   ", "p1", "click", ""), "empty_query"),
    (("1700000012", "u1", "x" * 600, "p1", "click", ""), "query_too_long"),
    (("1700000013", "u1", "necklace", "p1", "hover", ""), "unknown_interaction"),
    (("1700000014", "u1", "necklace", "p999", "click", ""), "unknown_product"),
    (("1700000000", "u1", "silver necklace", "p1", "click", "US"), "duplicate"),
]
LOG_COLUMNS = ["timestamp", "user_id", "query", "product_id", "interaction", "country"]
INVALID_UTF8_QUERY = b"caf\xe9 mug"  # latin-1 bytes, not UTF-8


def _write_catalog_csv(root: Path) -> None:
    with open(root / "catalog.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CATALOG[0]))
        w.writeheader()
        w.writerows(CATALOG)


def _csv_line(fields: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode("utf-8")


def _write_log(root: Path, fmt: str) -> Counter:
    """Write the mixed good/bad log in `fmt`; return the expected quarantine reasons."""
    expected = Counter(reason for _, reason in BAD_LOG)
    rows = [list(r) for r in GOOD_LOG] + [list(r) for r, _ in BAD_LOG]
    if fmt == "csv":
        data = _csv_line(LOG_COLUMNS) + b"".join(_csv_line(r) for r in rows)
        data += b"1700000020,u1," + INVALID_UTF8_QUERY + b",p1,click,\n"
        data += b"1700000021,u1,too,few\n"
        data += b"\n"  # a blank line is not a record
        (root / "search_log.csv").write_bytes(data)
        expected.update({"invalid_utf8": 1, "malformed_row": 1})
    elif fmt == "jsonl":
        lines = []
        for r in rows:
            rec = {k: (v if v != "" else None) for k, v in zip(LOG_COLUMNS, r)}
            if rec["timestamp"] and rec["timestamp"].isdigit():
                rec["timestamp"] = int(rec["timestamp"])  # JSON numbers and strings mix in one column
            lines.append(json.dumps(rec).encode())
        lines.append(b'{"timestamp": 1700000020, "user_id": "u1", "query": "' + INVALID_UTF8_QUERY
                     + b'", "product_id": "p1", "interaction": "click"}')
        lines.append(b'{"timestamp": 1700000021, "query": ')                       # invalid_json
        lines.append(b"[1700000022, \"u1\"]")                                        # malformed_row
        lines.append(json.dumps({"timestamp": 1700000023, "query": ["a"], "product_id": "p1",
                                 "interaction": "click"}).encode())                 # bad_type
        lines.append(json.dumps({"timestamp": 1700000024, "query": "q", "product_id": 1.5,
                                 "interaction": "click"}).encode())                 # bad_type
        lines.append(b"")
        (root / "search_log.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        expected.update({"invalid_utf8": 1, "invalid_json": 1, "malformed_row": 1, "bad_type": 2})
    else:
        cols = {c: [r[i] if r[i] != "" else None for r in rows] for i, c in enumerate(LOG_COLUMNS)}
        queries = [q.encode() if q is not None else None for q in cols["query"]] + [INVALID_UTF8_QUERY]
        table = pa.table({
            "timestamp": pa.array(cols["timestamp"] + ["1700000020"], pa.string()),
            "user_id": pa.array(cols["user_id"] + ["u1"], pa.string()),
            "query": pa.array(queries, pa.binary()),  # Parquet has no UTF-8 check on binary columns
            "product_id": pa.array(cols["product_id"] + ["p1"], pa.string()),
            "interaction": pa.array(cols["interaction"] + ["click"], pa.string()),
            "country": pa.array(cols["country"] + [None], pa.string()),
        })
        pq.write_table(table, root / "search_log.parquet")
        expected.update({"invalid_utf8": 1})
    return expected


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("batch_rows", [65536, 3])
def test_mixed_file_counts_reconcile_exactly(tmp_path: Path, fmt: str, batch_rows: int) -> None:
    _write_catalog_csv(tmp_path)
    expected = _write_log(tmp_path, fmt)
    qdir = tmp_path / "quarantine"
    ds = load_dataset(tmp_path, config={"batch_rows": batch_rows}, quarantine_dir=qdir, progress=False)
    report = ds.report
    assert report.reconciles()
    log_file = next(f for f in report.files if f.table == "search_log")
    n_in = len(GOOD_LOG) + sum(expected.values())
    assert log_file.rows_in == n_in
    assert log_file.accepted == len(GOOD_LOG) == ds.log.num_rows
    assert Counter(log_file.by_reason) == expected
    cat_file = next(f for f in report.files if f.table == "catalog")
    assert Counter(cat_file.by_reason) == CATALOG_REASONS
    assert cat_file.accepted == 3 == ds.catalog.num_rows
    # every quarantined row is in the quarantine file with its file, row number and reason
    records = [json.loads(line) for line in (qdir / "search_log.quarantine.jsonl").read_text("utf-8").splitlines()]
    assert Counter(r["reason"] for r in records) == expected
    assert all(r["file"].endswith(f"search_log.{fmt}") and r["row"] >= 1 for r in records)
    rows = sorted(r["row"] for r in records)
    assert len(set(rows)) == len(rows) and max(rows) <= n_in
    utf8 = next(r for r in records if r["reason"] == "invalid_utf8")
    assert "\\xe9" in json.dumps(utf8["original"])  # the bad byte is kept visibly
    cat_records = [json.loads(x) for x in (qdir / "catalog.quarantine.jsonl").read_text("utf-8").splitlines()]
    assert {(r["row"], r["reason"], r["column"]) for r in cat_records} == {
        (4, "duplicate", "product_id"), (5, "missing_required", "title"), (6, "non_numeric_value", "price"),
        (7, "non_numeric_value", "rating")}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_accepted_rows_have_canonical_types(tmp_path: Path, fmt: str) -> None:
    _write_catalog_csv(tmp_path)
    _write_log(tmp_path, fmt)
    ds = load_dataset(tmp_path, progress=False)
    assert ds.log.schema.field("timestamp").type == pa.int64()
    assert ds.log.schema.field("interaction").type == pa.string()
    ts = ds.log.column("timestamp").to_numpy()
    assert np.all(np.diff(ts) >= 0), "log must be sorted by timestamp"
    by_query = {r["query"]: r for r in ds.log.to_pylist()}
    assert by_query["oak couch"]["timestamp"] == 1700000001 and by_query["oak couch"]["user_id"] is None
    assert by_query["linen pillow"]["timestamp"] == 1700000002  # +01:00 offset honoured
    assert by_query["linen pillow"]["interaction"] == "purchase"
    assert by_query["gift"]["interaction"] == "purchase"  # code 4
    assert ds.quality_columns == ["rating"]
    cat = {r["product_id"]: r for r in ds.catalog.to_pylist()}
    assert cat["p1"]["tags"] == ["silver", "necklace"] and cat["p3"]["tags"] == ["linen", "pillow"]
    assert cat["p3"]["price"] is None and cat["p2"]["rating"] == 3.9
    assert ds.report.summary().startswith("validation of data")


def test_parquet_types_and_dedup_across_files(tmp_path: Path) -> None:
    pq.write_table(pa.table({"product_id": pa.array([1, 2, 3], pa.int64()), "title": ["a b", "c d", "e f"],
                             "tags": pa.array([["x"], None, []], pa.list_(pa.string())),
                             "review_count": pa.array([1, None, 3], pa.int64()),
                             "description": ["long", "text", "here"]}), tmp_path / "catalog.parquet")
    (tmp_path / "search_log").mkdir()
    when = pa.array([1_700_000_000_500, 1_700_000_001_000, None], pa.timestamp("ms", tz="UTC"))
    part = pa.table({"timestamp": when, "user_id": pa.array([7, None, 8], pa.int64()), "query": ["a", "b", "c"],
                     "product_id": pa.array([1, 2, 3], pa.int64()),
                     "interaction": pa.array(["click", "impression", "click"]).dictionary_encode()})
    pq.write_table(part, tmp_path / "search_log" / "part-0.parquet")
    pq.write_table(part.slice(0, 2), tmp_path / "search_log" / "part-1.parquet")  # repeats: duplicates
    ds = load_dataset(tmp_path, progress=False)
    assert ds.catalog.column("product_id").to_pylist() == ["1", "2", "3"]
    assert ds.quality_columns == ["review_count"]
    assert ds.report.ignored_columns == {"catalog": ["description"]}
    assert ds.catalog.column("tags").to_pylist() == [["x"], [], []]
    assert ds.log.column("timestamp").to_pylist() == [1_700_000_000, 1_700_000_001]
    assert ds.log.column("user_id").to_pylist() == ["7", None]
    assert ds.report.by_reason() == {"missing_required": 1, "duplicate": 2}
    assert ds.report.reconciles() and ds.report.rows_in == 3 + 5


def test_column_mapping_dict_and_json_file(tmp_path: Path) -> None:
    (tmp_path / "catalog.csv").write_text("listing_id,name,stars\nA,Red Mug,4.8\nB,Blue Mug,4.1\n", "utf-8")
    (tmp_path / "search_log.jsonl").write_text(
        json.dumps({"ts": "2024-01-01T00:00:00", "who": "u1", "q": "mug", "item": "A", "event": "favorite"}) + "\n",
        "utf-8")
    mapping = {"catalog": {"listing_id": "product_id", "name": "title"},
               "search_log": {"ts": "timestamp", "who": "user_id", "q": "query", "item": "product_id",
                              "event": "interaction"}}
    ds = load_dataset(tmp_path, config=mapping, progress=False)
    assert ds.log.to_pylist() == [{"timestamp": 1704067200, "user_id": "u1", "query": "mug", "product_id": "A",
                                   "interaction": "favorite", "country": None}]
    assert ds.quality_columns == ["stars"]
    cfg = tmp_path / "mapping.json"
    cfg.write_text(json.dumps(mapping), "utf-8")
    assert load_dataset(tmp_path, config=str(cfg), progress=False).log.num_rows == 1
    # unmapped: the missing column is named, with the fix
    with pytest.raises(upper_fast.FormatError, match=r"catalog\.csv.*'product_id'.*config"):
        load_dataset(tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown data config key"):
        DataConfig.from_any({"catalgo": {}})
    with pytest.raises(ValueError, match="unknown column"):
        DataConfig.from_any({"search_log": {"ts": "time"}})


def test_malformed_files_raise_naming_file_row_and_column(tmp_path: Path) -> None:
    _write_catalog_csv(tmp_path)
    (tmp_path / "search_log.csv").write_text(
        "timestamp,user_id,query,product_id,interaction\n1700000000,u1,necklace,p1,click\n"
        '1700000001,u1,"unterminated,p1,click\n', "utf-8")
    with pytest.raises(upper_fast.FormatError, match=r"search_log\.csv: row 2, line 3: unparseable CSV"):
        load_dataset(tmp_path, progress=False)
    (tmp_path / "search_log.csv").write_text("timestamp,user_id,product_id,interaction\n1,u,p1,click\n", "utf-8")
    with pytest.raises(upper_fast.FormatError, match=r"search_log\.csv: row 0 \(header\): missing required column 'query'"):
        load_dataset(tmp_path, progress=False)
    (tmp_path / "search_log.csv").unlink()
    (tmp_path / "search_log.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(upper_fast.FormatError, match=r"search_log\.parquet: unreadable Parquet"):
        load_dataset(tmp_path, progress=False)
    (tmp_path / "search_log.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="no search_log file"):
        load_dataset(tmp_path, progress=False)
    (tmp_path / "search_log.jsonl").write_text('{"timestamp": 1, "query": "q", "interaction": "click"}\n', "utf-8")
    with pytest.raises(upper_fast.FormatError, match=r"search_log\.jsonl.*'product_id'"):
        load_dataset(tmp_path, progress=False)
    (tmp_path / "search_log.csv").write_text("timestamp\n", "utf-8")
    with pytest.raises(ValueError, match="several files for table 'search_log'"):
        load_dataset(tmp_path, progress=False)
    assert issubclass(upper_fast.FormatError, OSError)


def test_quarantine_without_directory_keeps_counts_and_examples(tmp_path: Path) -> None:
    _write_catalog_csv(tmp_path)
    expected = _write_log(tmp_path, "csv")
    tables, report = validate_dataset(tmp_path, progress=False)
    assert report.quarantine_files == []
    assert report.quarantined == sum(expected.values()) + sum(CATALOG_REASONS.values())
    assert set(report.examples) == set(expected) | set(CATALOG_REASONS)
    assert "not written" in report.summary()
    d = report.to_dict()
    assert d["reconciles"] and d["rows_in"] == d["accepted"] + d["quarantined"]
    json.dumps(d)  # serialisable


def test_streaming_validate_writes_accepted_parquet(tmp_path: Path) -> None:
    _write_catalog_csv(tmp_path)
    _write_log(tmp_path, "jsonl")
    out = tmp_path / "accepted"
    tables, report = validate_dataset(tmp_path, config={"batch_rows": 2}, accepted_dir=out, keep_log=False,
                                      progress=False)
    assert tables.log.num_rows == 0  # not held in memory
    written = pq.read_table(out / "search_log.parquet")
    assert written.num_rows == len(GOOD_LOG) == report.files[-1].accepted
    assert pq.read_table(out / "catalog.parquet").num_rows == 3


def test_timestamp_parsing() -> None:
    assert parse_timestamp(1700000000) == 1700000000
    assert parse_timestamp("1700000000") == 1700000000
    assert parse_timestamp(1700000000.9) == 1700000000
    assert parse_timestamp("2024-01-01") == 1704067200
    assert parse_timestamp("2024-01-01T01:00:00+01:00") == 1704067200
    assert parse_timestamp("2024-01-01T00:00:00z") == 1704067200
    for bad in ("soon", float("nan"), True, [1], "2024-13-01"):
        assert parse_timestamp(bad) is None
    values, missing, bad = convert_timestamp(
        pa.array([-1500, 0, None], pa.timestamp("ms")), 3)
    assert values.tolist()[:2] == [0, 0] and missing.tolist() == [False, False, True]
    assert bad.tolist() == [True, False, False]  # before 1970 is out of range
    values, missing, bad = convert_timestamp(pa.array(["1700000000", " 5 ", None]), 3)
    assert values.tolist() == [1700000000, 5, 0] and missing.tolist() == [False, False, True]


def test_quarantine_file_is_in_input_order_and_codes(tmp_path: Path) -> None:
    _write_catalog_csv(tmp_path)
    _write_log(tmp_path, "csv")
    ds = load_dataset(tmp_path, quarantine_dir=tmp_path / "q", progress=False)
    rows = [r["row"] for r in iter_quarantine(tmp_path / "q" / "search_log.quarantine.jsonl")]
    assert rows == sorted(rows)
    codes = ds.interaction_codes()
    assert codes.dtype == np.int8
    names = ds.log.column("interaction").to_pylist()
    assert [["impression", "click", "favorite", "add_to_cart", "purchase"][c] for c in codes] == names


def test_parquet_string_column_with_invalid_utf8_is_quarantined_per_row(tmp_path: Path) -> None:
    raw = pa.array([b"Red Mug", b"caf\xe9 mug", b"Blue Mug"], pa.binary())
    titles = pa.Array.from_buffers(pa.string(), 3, raw.buffers())  # a string column holding bad bytes
    pq.write_table(pa.table({"product_id": ["p1", "p2", "p3"], "title": titles}), tmp_path / "catalog.parquet")
    (tmp_path / "search_log.csv").write_text("timestamp,query,product_id,interaction\n1,mug,p3,click\n", "utf-8")
    ds = load_dataset(tmp_path, quarantine_dir=tmp_path / "q", progress=False)
    assert ds.catalog.column("product_id").to_pylist() == ["p1", "p3"]
    record = json.loads((tmp_path / "q" / "catalog.quarantine.jsonl").read_text("utf-8"))
    assert (record["row"], record["reason"], record["column"]) == (2, "invalid_utf8", "title")
    assert record["original"] == {"product_id": "p2", "title": "caf\\xe9 mug"}
    assert ds.log.num_rows == 1 and ds.report.reconciles()


def test_bad_tags_and_users_rules(tmp_path: Path) -> None:
    catalog = [
        {"product_id": "a", "title": "Red Mug", "tags": ["red", "mug"]},
        {"product_id": "b", "title": "Blue Mug", "tags": "blue|mug"},
        {"product_id": "c", "title": "Green Mug", "tags": [1, 2]},            # bad_tags
        {"product_id": "d", "title": "Gold Mug", "tags": "[not json"},        # bad_tags
        {"product_id": "e", "title": "Grey Mug", "tags": {"k": "v"}},         # bad_tags
        {"product_id": "f", "title": 7},                                      # an int title is text "7"
        {"product_id": "g", "title": 7.5},                                    # bad_type
    ]
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in catalog) + "\n", "utf-8")
    (tmp_path / "users.csv").write_text("user_id,country\nu1,US\nu2,\nu1,GB\n,DE\n", "utf-8")
    (tmp_path / "search_log.csv").write_text("timestamp,query,product_id,interaction\n1,mug,a,click\n", "utf-8")
    ds = load_dataset(tmp_path, progress=False)
    assert ds.catalog.column("product_id").to_pylist() == ["a", "b", "f"]
    assert ds.catalog.column("tags").to_pylist() == [["red", "mug"], ["blue", "mug"], []]
    assert ds.catalog.column("title").to_pylist()[2] == "7"
    cat = next(f for f in ds.report.files if f.table == "catalog")
    assert cat.by_reason == {"bad_tags": 3, "bad_type": 1}
    users = next(f for f in ds.report.files if f.table == "users")
    assert users.by_reason == {"duplicate": 1, "missing_required": 1}
    assert ds.users is not None and ds.users.to_pylist() == [{"user_id": "u1", "country": "US"},
                                                             {"user_id": "u2", "country": None}]
    assert ds.report.reconciles() and ds.report.rows_in == 7 + 4 + 1
