"""The simulated marketplace: determinism, loadability and the properties it advertises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from upper_fast.data import load_dataset
from upper_fast_train.simulate import generate, measure_world

TINY = dict(n_products=400, n_users=150, n_queries=200, n_events=6000, progress=False)
FILES = ("catalog.parquet", "users.parquet", "search_log.parquet", "dataset.json", "ground_truth.json",
         "ground_truth_products.parquet", "ground_truth_users.parquet")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world, big enough for the advertised effects to show clearly (about 1 s)."""
    out = tmp_path_factory.mktemp("world")
    generate(out, seed=3, n_products=2500, n_users=1000, n_queries=800, n_events=80_000, progress=False)
    return out


@pytest.fixture(scope="module")
def props(world: Path) -> dict:
    return measure_world(world)


def test_same_seed_same_files_different_seed_different(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=7, **TINY)
    generate(tmp_path / "b", seed=7, **TINY)
    generate(tmp_path / "c", seed=8, **TINY)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = pq.read_table(tmp_path / "a" / "search_log.parquet")
    c = pq.read_table(tmp_path / "c" / "search_log.parquet")
    assert not a.equals(c)
    assert pq.read_table(tmp_path / "a" / "catalog.parquet").column("title") != \
        pq.read_table(tmp_path / "c" / "catalog.parquet").column("title")


def test_generated_world_loads_clean_and_says_simulated(tmp_path: Path) -> None:
    meta = generate(tmp_path, seed=1, **TINY)
    assert meta["simulated"] is True and meta["sizes"]["log_rows"] <= TINY["n_events"]
    assert meta["sizes"]["log_rows"] > 0.95 * TINY["n_events"]
    ds = load_dataset(tmp_path, progress=False)
    assert ds.simulated and ds.report.simulated
    assert ds.report.quarantined == 0 and ds.report.reconciles()
    assert "simulated" in ds.report.summary() and "simulated" in ds.describe()
    assert ds.log.num_rows == meta["sizes"]["log_rows"]
    assert ds.catalog.num_rows == 400 and ds.users is not None and ds.users.num_rows == 150
    assert set(ds.quality_columns) == {"rating", "review_count", "listing_age_days", "shop_conversion", "in_stock"}
    # No valid_end in dataset.json: the test window starts at its train_end, and the last 10% of the
    # rows before it are validation.
    train, valid, test = (ds.window(w) for w in ("train", "validation", "test"))
    assert train.num_rows + valid.num_rows + test.num_rows == ds.log.num_rows
    assert ds.windows.valid_end == meta["train_end"] and "last 10%" in ds.windows.source
    assert abs(valid.num_rows - 0.1 * (train.num_rows + valid.num_rows)) < 0.01 * ds.log.num_rows
    assert train.column("timestamp").to_numpy().max() < ds.windows.train_end <= valid.column("timestamp").to_numpy().min()
    assert valid.column("timestamp").to_numpy().max() < meta["train_end"] <= test.column("timestamp").to_numpy().min()
    users = ds.log.column("user_id").to_pylist()
    countries = ds.log.column("country").to_pylist()
    signed_out = [c for u, c in zip(users, countries) if u is None]
    assert signed_out and all(c is not None for c in signed_out)


def test_scale_and_argument_checks(tmp_path: Path) -> None:
    meta = generate(tmp_path, seed=0, n_products=1000, n_users=400, n_queries=400, n_events=10_000,
                    scale=0.25, progress=False)
    assert meta["sizes"]["products"] == 250 and meta["sizes"]["users"] == 100 and meta["sizes"]["queries"] == 200
    with pytest.raises(ValueError, match="scale"):
        generate(tmp_path, scale=0)
    with pytest.raises(ValueError, match="n_products"):
        generate(tmp_path, n_products=0)
    with pytest.raises(TypeError, match="unknown world parameters"):
        generate(tmp_path, w_magic=1.0)


def test_tail_queries_share_fewer_words_with_purchased_titles(props: dict) -> None:
    overlap = props["query_word_share_in_purchased_title"]
    assert overlap["tail"] < overlap["head"] - 0.15
    assert overlap["tail"] < overlap["torso"] - 0.3


def test_buyer_words_never_appear_in_titles(world: Path) -> None:
    truth = json.loads((world / "ground_truth.json").read_text())
    titles = " ".join(pq.read_table(world / "catalog.parquet").column("title").to_pylist()).lower()
    words = set(re.split(r"[^0-9a-z]+", titles))
    for concept in truth["concepts"]:
        for buyer in concept["buyer"]:
            if " " not in buyer:
                assert buyer not in words, buyer
    q_tail = [q for q in truth["queries"] if q["segment"] == "tail"]
    q_head = [q for q in truth["queries"] if q["segment"] == "head"]
    assert np.mean([len(q["query"].split()) for q in q_tail]) > np.mean([len(q["query"].split()) for q in q_head]) + 1
    assert any(q["typo"] for q in q_tail) and not any(q["typo"] for q in q_head)


def test_domestic_purchases_exceed_domestic_catalogue_share(props: dict) -> None:
    assert props["domestic_purchase_share"] > props["domestic_share_if_country_did_not_matter"] + 0.1


def test_quality_raises_purchase_rate(props: dict) -> None:
    rate = props["purchase_rate_by_rating_tercile"]
    assert rate["low"] < rate["mid"] < rate["high"]
    assert rate["high"] > 2 * rate["low"]


def test_query_frequency_is_roughly_zipf(props: dict) -> None:
    assert -1.4 < props["zipf_slope_top200"] < -0.6


def test_users_buy_their_styles(props: dict) -> None:
    style = props["style_preference_of_purchased_vs_shown"]
    assert style["purchased"] > 1.3 * style["shown"]


def test_funnel_rates_and_windows(props: dict) -> None:
    f = props["funnel"]
    assert 0.03 < f["click_per_shown"] < 0.25
    assert 0 < f["purchase_per_shown"] < f["click_per_shown"]
    assert f["purchase_per_add_to_cart"] <= 1.0
    assert 14 / 74 - 0.05 < props["eval_row_share"] < 14 / 74 + 0.05
    assert 0.65 < props["signed_in_row_share"] < 0.85


def test_products_shown_only_while_listed_and_in_stock(world: Path) -> None:
    log = pq.read_table(world / "search_log.parquet")
    gt = pq.read_table(world / "ground_truth_products.parquet")
    meta = json.loads((world / "dataset.json").read_text())
    row = {p: i for i, p in enumerate(gt.column("product_id").to_pylist())}
    prod = np.array([row[p] for p in log.column("product_id").to_pylist()])
    ts = log.column("timestamp").to_numpy()
    created = gt.column("created_at").to_numpy()
    sold_out = gt.column("sold_out_at").to_numpy()
    impression = np.array(log.column("interaction").to_pylist()) == "impression"
    assert np.all(created[prod] <= ts)
    sold = sold_out[prod] >= 0
    assert np.all(ts[impression & sold] < sold_out[prod][impression & sold])
    new_in_eval = (created[prod] >= meta["train_end"]) & (ts >= meta["train_end"])
    assert new_in_eval.any(), "products listed after train_end must appear in the evaluation window"
