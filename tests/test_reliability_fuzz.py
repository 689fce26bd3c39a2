"""A short, bounded fuzz run of every atheris target (fuzz/fuzz_*.py) inside the test suite, plus
replay of every saved crash input under tests/regressions/. The long campaign is
scripts/fuzz_campaign.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))
import run as fuzz_run  # noqa: E402  (fuzz/run.py)

pytest.importorskip("atheris")

# Inputs per target: small enough for < 20 s in total on a shared 2-core machine.
RUNS = {"text": 3000, "loaders": 300, "index_file": 1500, "bundle": 300}
REGRESSIONS = ROOT / "tests" / "regressions"


@pytest.mark.parametrize("target", fuzz_run.TARGETS)
def test_short_fuzz_run(tmp_path: Path, target: str) -> None:
    runs = RUNS[target] // (5 if os.environ.get("UPPER_FAST_SANITIZED") else 1)
    r = fuzz_run.run_target(target, runs, tmp_path / "corpus", tmp_path / "artifacts", seed=1, max_len=2048, timeout_s=60)
    if r.status == "skipped":
        pytest.skip(r.detail)
    crashes = [Path(a).read_bytes()[:200] for a in r.artifacts]
    assert r.status == "ok", f"{target}: {r.status} after {r.runs} inputs; inputs {crashes}\n{r.detail}"
    assert r.runs >= runs, f"{target}: only {r.runs} of {runs} inputs executed"


def _regression_inputs() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file()) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("path", _regression_inputs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_input(path: Path) -> None:
    """tests/regressions/<target>/<input>: a crash the fuzzer once found; it must stay fixed."""
    target = path.parent.name
    script = ROOT / "fuzz" / f"fuzz_{target}.py"
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120)
    if "FUZZ-SKIP:" in out.stdout:
        pytest.skip(out.stdout.split("FUZZ-SKIP:", 1)[1].strip())
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-3000:]
