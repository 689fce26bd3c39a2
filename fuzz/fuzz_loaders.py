"""Fuzz target "loaders": upper_fast.data.load_dataset on damaged search logs and catalogs.

Each input writes a dataset directory: a valid catalog plus a search log in CSV, JSONL or Parquet
whose bytes come from the fuzzer (raw, or a structure-aware mutation of a valid file), or a damaged
catalog with a valid log. Allowed outcomes: a Dataset whose counts reconcile (per file rows in =
accepted + quarantined, per-reason sums, accepted log rows == len(Dataset.log), quarantine file
lines == quarantined rows), or a clean ValueError / OSError (upper_fast.FormatError). Anything else
is a crash.
"""

from __future__ import annotations

import io
import shutil
import sys

import common
import pyarrow as pa
import pyarrow.parquet as pq

import atheris

with common.instrumented():
    import upper_fast  # noqa: F401
    from upper_fast import data

_STATE: dict[str, object] = {}
FORMATS = ("csv", "jsonl", "parquet")

_CATALOG = (
    "product_id,title,tags,category,shop_id,shop_country,price,rating\n"
    "p1,Red wool socks,wool|socks,clothing,s1,DE,9.5,4.5\n"
    "p2,Oak chair,oak|chair,furniture,s2,FR,120,3.9\n"
    "p3,Vintage ring,ring|gift,jewelry,s3,US,55,4.8\n"
).encode()
_LOG_ROWS = [
    (1700000000, "u1", "red socks", "p1", "click", "DE"),
    (1700000100, None, "oak chair", "p2", "purchase", "FR"),
    (1700000200, "u2", "ring", "p3", "impression", "US"),
    (1700000300, "u1", "wool", "p1", "add_to_cart", "DE"),
]


def _valid_logs() -> dict[str, bytes]:
    cols = ("timestamp", "user_id", "query", "product_id", "interaction", "country")
    csv = ",".join(cols) + "\n" + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in _LOG_ROWS)
    import json

    jsonl = "".join(json.dumps(dict(zip(cols, r))) + "\n" for r in _LOG_ROWS)
    table = pa.table({c: [r[i] for r in _LOG_ROWS] for i, c in enumerate(cols)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return {"csv": csv.encode(), "jsonl": jsonl.encode(), "parquet": buf.getvalue()}


def _setup() -> None:
    if "dir" in _STATE:
        return
    if not hasattr(data, "load_dataset"):
        common.skip("upper_fast.data.load_dataset is not in the package yet")
    _STATE.update(dir=common.scratch_dir(), logs=_valid_logs())


def _check(ds: object, quarantine: object) -> None:
    report = ds.report
    for f in report.files:
        assert f.rows_in == f.accepted + f.quarantined, f"{f.file}: {f.rows_in} != {f.accepted} + {f.quarantined}"
        assert sum(f.by_reason.values()) == f.quarantined, f"{f.file}: reasons {f.by_reason} vs {f.quarantined}"
    log_accepted = sum(f.accepted for f in report.files if f.table == "search_log")
    assert ds.log.num_rows == log_accepted, f"log has {ds.log.num_rows} rows, report says {log_accepted} accepted"
    cat_accepted = sum(f.accepted for f in report.files if f.table == "catalog")
    assert ds.catalog.num_rows == cat_accepted, f"catalog {ds.catalog.num_rows} rows vs {cat_accepted} accepted"
    for table in ("catalog", "search_log"):
        q = quarantine / f"{table}.quarantine.jsonl"
        n = sum(f.quarantined for f in report.files if f.table == table)
        lines = q.read_bytes().count(b"\n") if q.exists() else 0
        assert lines == n, f"{q.name}: {lines} lines for {n} quarantined rows"
    ts = ds.log.column("timestamp").to_numpy()
    assert (ts[1:] >= ts[:-1]).all(), "log not sorted by timestamp"


def TestOneInput(raw: bytes) -> None:
    _setup()
    fdp = atheris.FuzzedDataProvider(raw)
    fmt = FORMATS[fdp.ConsumeIntInRange(0, 2)]
    mode = fdp.ConsumeIntInRange(0, 3)
    root = _STATE["dir"] / "ds"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    catalog, log = _CATALOG, _STATE["logs"][fmt]
    if mode == 0:  # raw fuzz bytes as the log
        log = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == 1:  # damaged valid log
        log = common.mutate(log, fdp)
    elif mode == 2:  # valid header, fuzzed rows (CSV/JSONL get past the header checks)
        head = log.split(b"\n", 1)[0] + b"\n" if fmt != "parquet" else b""
        log = head + fdp.ConsumeBytes(fdp.remaining_bytes()) if fmt != "parquet" else common.mutate(log, fdp)
    else:  # damaged catalog, valid log
        catalog = common.mutate(_CATALOG, fdp)
    (root / "catalog.csv").write_bytes(catalog)
    (root / f"search_log.{fmt}").write_bytes(log)
    quarantine = _STATE["dir"] / "q"
    shutil.rmtree(quarantine, ignore_errors=True)
    try:
        ds = data.load_dataset(root, quarantine_dir=quarantine, progress=False)
    except (ValueError, OSError):
        return
    _check(ds, quarantine)


def seeds() -> list[bytes]:
    return [bytes([0, 1, 2, 1, 5]), bytes([1, 1, 1, 3, 0]), bytes([2, 2, 0, 1, 2]), b"\x00\x00ts,user\n1,2\n",
            b"\x01\x02" + b'{"timestamp": "x"}\n', bytes([0, 3, 2, 1, 1, 4])]


if __name__ == "__main__":
    common.main(TestOneInput, seeds, _setup)
    sys.exit(0)
