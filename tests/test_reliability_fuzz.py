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
import common  # noqa: E402  (fuzz/common.py)
import run as fuzz_run  # noqa: E402  (fuzz/run.py)
from _paths import child_env  # noqa: E402  (tests/_paths.py)

pytest.importorskip("atheris")

# Inputs per target: small enough for < 20 s in total on a shared 2-core machine.
RUNS = {"text": 1500, "loaders": 150, "index_file": 800, "bundle": 80}
REGRESSIONS = ROOT / "tests" / "regressions"


@pytest.mark.parametrize("target", fuzz_run.TARGETS)
def test_short_fuzz_run(tmp_path: Path, target: str) -> None:
    runs = RUNS[target] // (5 if os.environ.get("UPPER_FAST_SANITIZED") else 1)
    if target == "bundle":
        try:  # shared with test_public_surface: one ONNX export per test process
            common.cached_bundle()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no tiny bundle can be built here: {type(exc).__name__}: {exc}")
    r = fuzz_run.run_target(target, runs, tmp_path / "corpus", tmp_path / "artifacts", seed=1, max_len=2048,
                            timeout_s=60, env=child_env())
    if r.status == "skipped":
        pytest.skip(r.detail)
    crashes = [Path(a).read_bytes()[:200] for a in r.artifacts]
    assert r.status == "ok", f"{target}: {r.status} after {r.runs} inputs; inputs {crashes}\n{r.detail}"
    assert r.runs >= runs, f"{target}: only {r.runs} of {runs} inputs executed"


def _regression_targets() -> list[str]:
    return sorted(p.name for p in REGRESSIONS.iterdir() if p.is_dir()) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("target", _regression_targets())
def test_regression_inputs(target: str) -> None:
    """tests/regressions/<target>/*: crashes the fuzzer once found, replayed strictly (fuzz/replay.py).
    Inputs named after an open bug in fuzz/common.KNOWN_BUGS must still fail (once the fix lands
    this test fails, asking to drop the entry); every other input must pass."""
    if target == "bundle":
        try:
            common.cached_bundle()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no tiny bundle can be built here: {type(exc).__name__}: {exc}")
    files = sorted(p for p in (REGRESSIONS / target).iterdir() if p.is_file())
    env = child_env(UPPER_FAST_FUZZ_STRICT="1")
    out = subprocess.run([sys.executable, str(ROOT / "fuzz" / "replay.py"), target, *map(str, files)],
                         capture_output=True, text=True, timeout=300, env=env)
    if "FUZZ-SKIP:" in out.stdout:
        pytest.skip(out.stdout.split("FUZZ-SKIP:", 1)[1].strip())
    verdicts = {line.split(" ")[1].rstrip(":"): line for line in out.stdout.splitlines()
                if line.startswith(("PASS ", "FAIL "))}
    assert len(verdicts) == len(files), f"replay died (rc={out.returncode}): {out.stderr[-3000:]}"
    problems = []
    for f in files:
        line = verdicts[f.name]
        bug = next((b for b in common.KNOWN_BUGS if f.name.startswith(b)), None)
        if bug is not None and line.startswith("PASS"):
            problems.append(f"{f.name} passes now: bug {bug!r} is fixed, delete it from fuzz/common.KNOWN_BUGS")
        elif bug is None and line.startswith("FAIL"):
            problems.append(line)
    assert not problems, "\n".join(problems)
