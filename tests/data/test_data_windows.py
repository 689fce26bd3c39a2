"""Train / validation / test windows (upper_fast.data.windows) and how load_dataset applies them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from upper_fast.cli import main
from upper_fast.data import load_dataset
from upper_fast_train.simulate import generate
from upper_fast.data.windows import Windows, parse_time, resolve_windows

TS = np.arange(0, 1000, 10, dtype=np.int64)  # 100 rows, one every 10 s


def test_explicit_boundaries_and_their_masks():
    w = resolve_windows({"train_end": 500, "valid_end": 800}, TS)
    assert (w.train_end, w.valid_end) == (500, 800) and "as given" in w.source
    sizes = [int(w.mask(TS, n).sum()) for n in ("train", "validation", "test")]
    assert sizes == [50, 30, 20] and sum(sizes) == len(TS)


def test_without_valid_end_the_last_tenth_before_train_end_validates():
    w = resolve_windows({"train_end": 500}, TS)
    assert w.valid_end == 500 and w.train_end == 450  # 50 rows before 500; the last 5 validate
    assert int(w.mask(TS, "validation").sum()) == 5 and "last 10%" in w.source
    assert resolve_windows({"train_end": 500, "judged": True}, TS).bounds("validation") == (500, 500)


def test_iso_dates_and_overrides():
    assert parse_time("1970-01-01T00:08:20Z") == 500 and parse_time("1970-01-01") == 0 and parse_time("800") == 800
    w = resolve_windows({"train_end": 100}, TS, train_end="1970-01-01T00:08:20", valid_end=800)
    assert (w.train_end, w.valid_end) == (500, 800)
    with pytest.raises(ValueError, match="ISO date"):
        parse_time("next tuesday")


@pytest.mark.parametrize("meta, match", [
    ({}, "no train_end"),
    ({"train_end": 500, "valid_end": 400}, "must be after train_end"),
    ({"train_end": 500, "valid_end": 5000}, "test window would be empty"),
    ({"train_end": -5, "valid_end": 500}, "train window would be empty"),
    ({"train_end": 501, "valid_end": 505}, "validation window is empty"),
    ({"train_end": 5}, "nothing to train on"),
])
def test_bad_windows_name_the_fix(meta, match):
    with pytest.raises(ValueError, match=match):
        resolve_windows(meta, TS)


def test_load_dataset_resolves_and_records_windows(tmp_path: Path):
    meta = generate(tmp_path, seed=0, n_products=200, n_users=60, n_queries=60, n_events=3000, progress=False)
    ds = load_dataset(tmp_path, progress=False)
    assert ds.meta["given_train_end"] == meta["train_end"] == ds.windows.valid_end
    assert ds.meta["train_end"] == ds.windows.train_end < meta["train_end"]
    rows = sum(ds.window(n).num_rows for n in ("train", "validation", "test"))
    assert rows == ds.log.num_rows
    valid_end = meta["train_end"] + 86400
    ds2 = load_dataset(tmp_path, progress=False, train_end=meta["train_end"], valid_end=valid_end)
    assert ds2.windows == Windows(meta["train_end"], valid_end, "train_end and valid_end as given")
    with pytest.raises(ValueError, match="unknown window"):
        ds.window("eval")


def test_cli_window_errors_write_nothing(tmp_path: Path, capsys):
    data = tmp_path / "data"
    meta = generate(data, seed=0, n_products=200, n_users=60, n_queries=60, n_events=3000, progress=False)
    late = str(meta["train_end"] + 400 * 86400)
    rc = main(["train", str(data), str(tmp_path / "run"), "--preset", "tiny", "--valid-end", late, "--no-progress"])
    assert rc == 2 and "test window would be empty" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (data / "dataset.json").write_text(json.dumps({**meta, "valid_end": meta["train_end"] - 10**9}))
    rc = main(["train", str(data), str(tmp_path / "run"), "--preset", "tiny", "--no-progress"])
    assert rc == 2 and "must be after train_end" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
