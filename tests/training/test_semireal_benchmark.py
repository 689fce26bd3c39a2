"""benchmarks/semireal_homedepot.py: real Home Depot titles and queries with simulated shoppers;
skipped where ../shared/data is absent (the real files are read in place, never copied)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from upper_fast.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from semireal_homedepot import GENERIC, Params, brands_from_titles, generate, main  # noqa: E402

ROWS = 20_000
SEED = 3
FILES = ("catalog.parquet", "users.parquet", "search_log.parquet", "dataset.json", "ground_truth.json")


@pytest.fixture(scope="module")
def semireal(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("semireal")
    generate(shared_data, out, Params(rows=ROWS, seed=SEED))
    return out, load_dataset(out, progress=False)


def test_every_row_is_accepted(semireal: tuple[Path, Any]) -> None:
    out, ds = semireal
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds.report.reconciles() and ds.report.quarantined == 0
    assert ds.simulated and meta["benchmark"] == "semireal-homedepot"
    assert 0.98 * ROWS < ds.log.num_rows <= ROWS == meta["params"]["rows"]
    assert ds.log.num_rows == meta["sizes"]["log_rows"]
    assert ds.catalog.num_rows == 54_667
    assert all(pid.startswith("hd") for pid in ds.catalog.column("product_id").to_pylist())
    assert ds.catalog.column("tags").to_pylist()[0] == [] and ds.catalog.column("category").null_count == 54_667
    assert sorted(ds.quality_columns) == ["rating", "review_count"]
    assert ds.users is not None and ds.users.num_rows == meta["sizes"]["users"]
    signed_out = ds.log.column("user_id").null_count / ds.log.num_rows
    assert 0.15 < signed_out < 0.35 and ds.log.column("country").null_count == 0
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    assert len(truth["users"]) == ds.users.num_rows
    assert all(len(u["brands"]) <= 3 for u in truth["users"])
    assert sum(len(u["brands"]) > 0 for u in truth["users"]) > 0.9 * len(truth["users"])  # none: only generic reach


def test_train_end_splits_the_log(semireal: tuple[Path, Any]) -> None:
    _, ds = semireal
    train, later = ds.split()
    assert train.num_rows + later.num_rows == ds.log.num_rows
    assert 0.05 < later.num_rows / ds.log.num_rows < 0.35
    assert max(train.column("timestamp").to_pylist()) < ds.train_end <= min(later.column("timestamp").to_pylist())


def test_later_purchase_requests_are_mostly_on_unseen_queries(semireal: tuple[Path, Any]) -> None:
    out, ds = semireal
    given_end = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["train_end"]
    train, later = ds.split(given_end)  # the generator's later window: the evaluation's test window
    assert later.num_rows == ds.window("test").num_rows
    seen = set(train.column("query").to_pylist())
    requests = set()  # grouped as the evaluation groups them: (user, query), signed out (query, timestamp)
    for event in later.to_pylist():
        if event["interaction"] == "purchase":
            user = event["user_id"]
            requests.add((user, event["query"]) if user is not None else (None, event["query"], event["timestamp"]))
    absent = sum(r[1] not in seen for r in requests) / len(requests)
    assert len(requests) > 50 and absent >= 0.6
    stats = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["later_window_purchase_requests"]
    assert stats["requests"] == len(requests) and stats["absent_share"] == round(absent, 4)
    assert stats["unseen_share"] >= 0.6


def test_a_purchase_follows_impression_click_and_cart_in_its_search(semireal: tuple[Path, Any]) -> None:
    _, ds = semireal
    seen: dict[tuple[Any, ...], list[tuple[int, str]]] = defaultdict(list)
    purchases = []
    for event in ds.log.to_pylist():  # time order
        key = (event["user_id"], event["query"], event["product_id"])
        if event["interaction"] == "purchase":
            purchases.append((key, event["timestamp"]))
        seen[key].append((event["timestamp"], event["interaction"]))
    assert purchases
    for key, ts in purchases:
        # the same search: the same shopper, query and product within the hour before, in funnel order
        # (two visitors' searches for one query may interleave, so follow the chain backwards)
        events = [(t, kind) for t, kind in seen[key] if ts - 3600 < t < ts]
        at: int | None = ts
        for kind in ("add_to_cart", "click", "impression"):
            at = max((t for t, k in events if k == kind and at is not None and t < at), default=None)
        assert at is not None, (key, ts, events)


def test_seeded_and_deterministic(semireal: tuple[Path, Any], shared_data: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = semireal
    again = tmp_path / "again"
    assert main(["--out", str(again), "--rows", str(ROWS), "--seed", str(SEED), "--data", str(shared_data)]) == 0
    assert "unseen queries" in capsys.readouterr().out
    for name in FILES:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    generate(shared_data, other, Params(rows=ROWS, seed=SEED + 1))
    assert (other / "search_log.parquet").read_bytes() != (out / "search_log.parquet").read_bytes()


def test_brands_from_titles() -> None:
    titles = ["Hampton Bay 52 in. Fan", "Hampton Bay Patio Set", "Hampton Bay Lamp",
              "BEHR Premium Paint", "BEHR Premium Stain", "BEHR Marquee Paint", "BEHR 1-gal. Primer",
              "36 in. Door", "Acme Widget", "Knape &amp; Vogt Shelf", "Knape &amp; Vogt Rail", "Knape &amp; Vogt Slide"]
    names, brand = brands_from_titles(titles, min_products=3)
    assert names[0] == GENERIC
    assert [names[b] for b in brand] == ["hampton bay"] * 3 + ["behr"] * 4 + [GENERIC] * 2 + ["knape"] * 3
