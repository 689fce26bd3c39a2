"""Fuzz campaign runner: executes the atheris targets in fuzz/ and counts what they ran.

    python fuzz/run.py --runs 2000                       # every target, 2,000 inputs each
    python fuzz/run.py --targets text,index_file --runs 500000 --corpus build/fuzz/corpus --json out.json

Each target runs in its own subprocess (`python fuzz/fuzz_<t>.py -runs=N ...`), so a native crash
kills only that process and is reported, with the crashing input saved under --artifacts.
Exit status: 0 when every target that ran finished its inputs without a crash, 1 otherwise.

The child imports a frozen snapshot of the package under test (copied into the run's scratch root
at start), never the working tree itself: copying a rebuilt `_core*.so` over the one a running
process has mapped (`cp` rewrites the same inode) swaps the machine code under it, and the next
call into `_core` dies of SIGBUS/SIGSEGV. That is how the 2026-12-01 campaign's `bundle` target
"crashed" (docs/reliability.md). The scratch root also holds the children's scratch directories
and is removed after the target however the child ended (libFuzzer skips Python's atexit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ_DIR))
import common  # noqa: E402  (fuzz/common.py)

TARGETS = ("text", "loaders", "index_file", "bundle")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass
class TargetResult:
    target: str
    status: str  # "ok", "crash", "skipped", "error"
    runs: int
    seconds: float
    returncode: int
    detail: str = ""
    artifacts: list[str] = field(default_factory=list)


def run_target(
    target: str,
    runs: int,
    corpus: Path,
    artifacts: Path,
    seed: int,
    max_len: int,
    timeout_s: float,
    per_input_timeout_s: int = 20,
    env: dict[str, str] | None = None,
    snapshot: bool = True,
) -> TargetResult:
    """Runs one target for `runs` inputs (or until `timeout_s`), returns what it executed.

    snapshot: the child imports a private copy of the package it would otherwise import (see the
    module docstring); False runs it on the live package directory (tests/serving/test_reliability_fuzz.py
    uses that to show what the snapshot protects against)."""
    script = FUZZ_DIR / f"fuzz_{target}.py"
    if not script.exists():
        return TargetResult(target, "skipped", 0, 0.0, 0, f"{script.name} not present")
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env, PYTHONHASHSEED="0")
    common.remove_stale_scratch(common.scratch_base())  # left by direct runs of fuzz/fuzz_<t>.py
    # Named like the children's directories, so the sweep also removes it if this process is killed.
    scratch = Path(tempfile.mkdtemp(prefix=f"{common.SCRATCH_PREFIX}{os.getpid()}_", dir=common.scratch_base()))
    try:
        env[common.SCRATCH_ENV] = str(scratch)
        if snapshot:
            env["PYTHONPATH"] = _snapshot_package(env.get("PYTHONPATH", ""), scratch / "pkg")
        return _run_child(target, script, runs, corpus, artifacts, seed, max_len, timeout_s, per_input_timeout_s, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def package_source(pythonpath: str) -> Path | None:
    """The directory whose `upper_fast` a fuzz child would import: an explicit $PYTHONPATH entry,
    else the source tree when it has an in-place _core (fuzz/common.py's rule), else None (the
    installed package, which no rebuild of the working tree touches)."""
    explicit = common.explicit_package_dir(pythonpath)
    if explicit is not None:
        return explicit
    tree = FUZZ_DIR.parent / "python"
    return tree if any((tree / "upper_fast").glob("_core*.so")) else None


def _snapshot_package(pythonpath: str, dest: Path) -> str:
    """Copies the package a child would import to dest/upper_fast; returns $PYTHONPATH with dest
    first (the other entries stay behind it: they may hold more than upper_fast, e.g. training/)."""
    source = package_source(pythonpath)
    if source is None:
        return pythonpath
    shutil.copytree(source / "upper_fast", dest / "upper_fast", ignore=shutil.ignore_patterns("__pycache__"))
    rest = [p for p in pythonpath.split(os.pathsep) if p]
    if common.explicit_package_dir(pythonpath) is None:  # the source tree, as fuzz/common.py adds it
        rest.append(str(FUZZ_DIR.parent / "training"))
    return os.pathsep.join([str(dest), *dict.fromkeys(rest)])


def _run_child(target: str, script: Path, runs: int, corpus: Path, artifacts: Path, seed: int, max_len: int,
               timeout_s: float, per_input_timeout_s: int, env: dict[str, str]) -> TargetResult:
    before = set(os.listdir(artifacts))
    cmd = [
        sys.executable,
        str(script),
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={max_len}",
        f"-timeout={per_input_timeout_s}",
        f"-max_total_time={int(timeout_s)}",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/{target}-",
        str(corpus),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env, timeout=timeout_s + 120)
    elapsed = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    new = sorted(a for a in set(os.listdir(artifacts)) - before if a.startswith(f"{target}-"))
    if "FUZZ-SKIP:" in out:
        reason = out.split("FUZZ-SKIP:", 1)[1].splitlines()[0].strip()
        return TargetResult(target, "skipped", 0, elapsed, proc.returncode, reason)
    m = _DONE.search(out)
    stats = [int(x) for x in _STAT.findall(out)]
    executed = int(m.group(1)) if m else (max(stats) if stats else 0)
    final = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    if final:
        executed = int(final.group(1))
    if proc.returncode == 0 and not new:
        return TargetResult(target, "ok", executed, elapsed, 0)
    tail = "\n".join(out.strip().splitlines()[-40:])
    status = "crash" if new or "Uncaught Python exception" in out or "deadly signal" in out else "error"
    return TargetResult(target, status, executed, elapsed, proc.returncode, tail, [str(artifacts / a) for a in new])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}")
    p.add_argument("--runs", type=int, default=2000, help="inputs per target")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=600.0, help="wall-clock cap per target, seconds")
    p.add_argument("--corpus", type=Path, default=None, help="persistent corpus root (default: a temp dir)")
    p.add_argument("--artifacts", type=Path, default=FUZZ_DIR.parent / "build" / "fuzz" / "artifacts",
                   help="where crashing inputs go (kept for regression tests)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="upper_fast_fuzz_") as tmp:
        corpus_root = args.corpus or Path(tmp) / "corpus"
        artifacts = args.artifacts.resolve()
        results = []
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            if target not in TARGETS:
                p.error(f"unknown target {target!r}; choose from {TARGETS}")
            r = run_target(target, args.runs, corpus_root / target, artifacts, args.seed, args.max_len, args.timeout)
            results.append(r)
            rate = r.runs / r.seconds if r.seconds else 0.0
            print(f"{r.target:12s} {r.status:8s} runs={r.runs:>9,d} {r.seconds:7.1f}s ({rate:,.0f}/s) {r.detail[:200] if r.status == 'skipped' else ''}", flush=True)
            if r.status not in ("ok", "skipped"):
                print(r.detail, file=sys.stderr)
                for a in r.artifacts:
                    print(f"  crashing input: {a}", file=sys.stderr)
        total = sum(r.runs for r in results)
        crashes = sum(r.status in ("crash", "error") for r in results)
        print(f"total inputs executed: {total:,d}; targets with crashes/errors: {crashes}", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"total_runs": total, "results": [asdict(r) for r in results]}, indent=2))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
