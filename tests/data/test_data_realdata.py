"""Real judged sets (Home Depot, Crowdflower) in the project's schema; skipped where ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from upper_fast_train.realdata import load_crowdflower, load_homedepot


def test_homedepot_train_and_dev(shared_data: Path) -> None:
    train = load_homedepot(shared_data, "train")
    ds, judged = train.dataset, train.judgments
    assert ds.catalog.num_rows == 54_667 and ds.users is None
    assert judged.num_rows == 44_823 == ds.log.num_rows
    assert len(set(judged.column("query").to_pylist())) == 7_103
    assert ds.report.reconciles() and ds.report.quarantined == 0
    assert not ds.simulated and "simulated" not in ds.report.summary()
    assert all(f.file.startswith(str(shared_data)) for f in ds.report.files)
    # graded relevance -> interaction, row for row (the log keeps the judgment order)
    rel = judged.column("relevance").to_numpy()
    inter = np.array(ds.log.column("interaction").to_pylist())
    assert np.all((inter == "purchase") == (rel >= 2.5))
    assert np.all((inter == "click") == ((rel >= 2.0) & (rel < 2.5)))
    assert np.all((inter == "impression") == (rel < 2.0))
    assert ds.log.column("user_id").null_count == ds.log.num_rows
    assert ds.log.column("query").to_pylist() == judged.column("query").to_pylist()
    train_rows, eval_rows = ds.split()
    assert train_rows.num_rows == ds.log.num_rows and eval_rows.num_rows == 0
    dev = load_homedepot(shared_data / "homedepot", "dev")
    assert dev.judgments.num_rows == 14_301
    assert dev.dataset.split()[1].num_rows == 14_301
    assert not set(dev.judgments.column("query").to_pylist()) & set(judged.column("query").to_pylist())
    graded = load_homedepot(shared_data, "train", graded=True).dataset
    inter = np.array(graded.log.column("interaction").to_pylist())
    assert np.all((inter == "purchase") == (rel >= 2.5)) and np.all((inter == "impression") == (rel <= 1.0))
    assert np.all((inter == "add_to_cart") == ((rel >= 2.0) & (rel < 2.5)))
    assert graded.meta["interaction_from_relevance"]["favorite"] == ">= 1.5"


def test_graded_interactions_cover_every_gain() -> None:
    from upper_fast_train.realdata import _graded_interactions

    rel = np.array([1.0, 1.33, 1.5, 1.67, 2.0, 2.33, 2.5, 2.67, 3.0])
    assert _graded_interactions(rel).tolist() == [
        "impression", "click", "favorite", "favorite", "add_to_cart", "add_to_cart", "purchase", "purchase", "purchase"]


def test_crowdflower(shared_data: Path) -> None:
    cf = load_crowdflower(shared_data)
    assert cf.judgments.num_rows == 10_158 == cf.dataset.log.num_rows
    assert len(set(cf.judgments.column("query").to_pylist())) == 261
    assert cf.dataset.catalog.num_rows == len(set(cf.dataset.catalog.column("title").to_pylist()))
    rel = cf.judgments.column("relevance").to_numpy()
    inter = np.array(cf.dataset.log.column("interaction").to_pylist())
    assert np.all((inter == "purchase") == (rel == 4)) and np.all((inter == "click") == (rel == 3))
    assert cf.dataset.meta["relevant_at"] == 3.0 and cf.dataset.report.reconciles()


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="held out"):
        load_homedepot(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="homedepot"):
        load_homedepot(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="crowdflower"):
        load_crowdflower(tmp_path)
