"""A short, bounded fuzz run of every atheris target (fuzz/fuzz_*.py) inside the test suite, plus
replay of every saved crash input under tests/regressions/. The long campaign is
scripts/fuzz_campaign.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz"))
import common  # noqa: E402  (fuzz/common.py)
import run as fuzz_run  # noqa: E402  (fuzz/run.py)
from _paths import child_env  # noqa: E402  (tests/_paths.py)

pytest.importorskip("atheris")

# Inputs per target: small enough for < 20 s in total on a shared 2-core machine.
RUNS = {"text": 1500, "loaders": 150, "index_file": 800, "bundle": 80}
REGRESSIONS = ROOT / "tests" / "regressions"


@pytest.mark.parametrize("target", fuzz_run.TARGETS)
def test_short_fuzz_run(tmp_path: Path, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = RUNS[target] // (5 if os.environ.get("UPPER_FAST_SANITIZED") else 1)
    if target == "bundle":
        try:  # shared with test_public_surface: one ONNX export per test process
            common.cached_bundle()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no tiny bundle can be built here: {type(exc).__name__}: {exc}")
    # The run's scratch root (snapshot of the package, the child's scratch directories) goes here,
    # so the test can see that nothing is left behind (libFuzzer ends children without atexit).
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(common, "scratch_base", lambda: shm)
    r = fuzz_run.run_target(target, runs, tmp_path / "corpus", tmp_path / "artifacts", seed=1, max_len=2048,
                            timeout_s=60, env=child_env())
    assert not list(shm.iterdir()), f"{target}: scratch left behind: {[p.name for p in shm.iterdir()]}"
    if r.status == "skipped":
        pytest.skip(r.detail)
    crashes = [Path(a).read_bytes()[:200] for a in r.artifacts]
    assert r.status == "ok", f"{target}: {r.status} after {r.runs} inputs; inputs {crashes}\n{r.detail}"
    assert r.runs >= runs, f"{target}: only {r.runs} of {runs} inputs executed"


def test_stale_scratch_sweep(tmp_path: Path) -> None:
    """Scratch directories of processes that are gone are removed; live ones and others are not."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    names = {f"upper_fast_fuzz_{dead}_ab_cd123": False,       # dead process: removed
             f"upper_fast_fuzz_{os.getpid()}_abcdefgh": True,  # this process: kept
             f"upper_fast_fuzz_{dead}_short": True,            # not a mkdtemp name: kept
             "upper_fast_fuzz_12_45678": True,                 # fuzz/run.py-style name: kept
             "something_else": True}
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"x")
    assert common.remove_stale_scratch(tmp_path) == 1
    assert {p.name for p in tmp_path.iterdir()} == {n for n, kept in names.items() if kept}


# Under scripts/sanitize.sh ASan's own SIGBUS handler reports the rewrite instead of libFuzzer, and
# what these two check is the harness, not native code.
_harness_only = pytest.mark.skipif(bool(os.environ.get("UPPER_FAST_SANITIZED")),
                                   reason="checks fuzz/run.py, not native code; ASan reports the SIGBUS itself")


def _replace_core_while_running(tmp_path: Path, snapshot: bool) -> "fuzz_run.TargetResult":
    """Runs the `text` target on a private copy of the package and, once the child runs, truncates
    that copy's _core*.so in place: the first step of `cp new.so python/upper_fast/` (O_TRUNC on the
    same inode). The file stays empty, so the child's next call into _core faults for certain
    (SIGBUS) instead of only within cp's short window."""
    source = fuzz_run.package_source(child_env()["PYTHONPATH"])
    if source is None or not any((source / "upper_fast").glob("_core*.so")):
        pytest.skip("the package under test is installed, not in a directory a rebuild writes to")
    pkg = tmp_path / "pkg"
    shutil.copytree(source / "upper_fast", pkg / "upper_fast", ignore=shutil.ignore_patterns("__pycache__"))
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(pkg), env["PYTHONPATH"]])
    corpus = tmp_path / "corpus"
    box: list[fuzz_run.TargetResult] = []
    t = threading.Thread(target=lambda: box.append(fuzz_run.run_target(
        "text", 10**8, corpus, tmp_path / "artifacts", seed=1, max_len=512, timeout_s=8, env=env, snapshot=snapshot)))
    t.start()
    deadline = time.monotonic() + 60
    while t.is_alive() and not (corpus.is_dir() and any(corpus.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)  # the seeds are written after the child imported upper_fast
    time.sleep(1.0)
    so = next((pkg / "upper_fast").glob("_core*.so"))
    with open(so, "r+b") as f:  # same inode, like cp onto an existing file
        f.truncate(0)
    t.join(120)
    assert box, "run_target did not return"
    return box[0]


@_harness_only
def test_core_rewritten_under_a_live_child_kills_it(tmp_path: Path) -> None:
    """The 2026-12-01 `bundle` "deadly signal" (docs/reliability.md): a rebuilt _core copied over the
    one a fuzz child had mapped. Reproduced on a private copy of the package: the child dies."""
    r = _replace_core_while_running(tmp_path, snapshot=False)
    assert r.status == "crash" and "deadly signal" in r.detail, f"{r.status} rc={r.returncode}\n{r.detail}"


@_harness_only
def test_fuzz_children_run_on_a_snapshot(tmp_path: Path) -> None:
    """The same in-place rewrite does not reach a child that runs on fuzz/run.py's package snapshot."""
    r = _replace_core_while_running(tmp_path, snapshot=True)
    assert r.status == "ok", f"{r.status} rc={r.returncode}\n{r.detail}"
    assert r.runs > 0


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
