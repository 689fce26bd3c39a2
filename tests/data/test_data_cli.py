"""`upper-fast generate` and `upper-fast validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from upper_fast.cli import main


def test_generate_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "world"
    rc = main(["generate", str(out), "--seed", "2", "--products", "300", "--users", "100", "--queries", "120",
               "--events", "4000", "--no-progress", "--measure"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "simulated marketplace written" in text and "measured properties (simulated)" in text
    assert json.loads((out / "dataset.json").read_text())["sizes"]["products"] == 300
    assert main(["validate", str(out), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["simulated"] and report["reconciles"] and report["quarantined"] == 0
    assert report["accepted"] == report["rows_in"] > 4000 - 100


def test_validate_reports_quarantine_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "catalog.csv").write_text("product_id,title\np1,Red Mug\n", "utf-8")
    (tmp_path / "search_log.csv").write_text(
        "timestamp,user_id,query,product_id,interaction\n1700000000,u1,mug,p1,click\n1700000001,u1,mug,p2,click\n",
        "utf-8")
    qdir = tmp_path / "q"
    assert main(["validate", str(tmp_path), "--quarantine", str(qdir), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "2 rows in" not in text and "unknown_product=1" in text and "reconciled" in text
    assert (qdir / "search_log.quarantine.jsonl").read_text().count("\n") == 1
    (tmp_path / "search_log.csv").write_text("timestamp,query\n", "utf-8")
    assert main(["validate", str(tmp_path), "--no-progress"]) == 2
    assert "missing required column 'product_id'" in capsys.readouterr().err
