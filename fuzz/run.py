"""Fuzz campaign runner: executes the atheris targets in fuzz/ and counts what they ran.

    python fuzz/run.py --runs 2000                       # every target, 2,000 inputs each
    python fuzz/run.py --targets text,index_file --runs 500000 --corpus build/fuzz/corpus --json out.json

Each target runs in its own subprocess (`python fuzz/fuzz_<t>.py -runs=N ...`), so a native crash
kills only that process and is reported, with the crashing input saved under --artifacts.
Exit status: 0 when every target that ran finished its inputs without a crash, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
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
) -> TargetResult:
    """Runs one target for `runs` inputs (or until `timeout_s`), returns what it executed."""
    script = FUZZ_DIR / f"fuzz_{target}.py"
    if not script.exists():
        return TargetResult(target, "skipped", 0, 0.0, 0, f"{script.name} not present")
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
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
    env = dict(os.environ if env is None else env, PYTHONHASHSEED="0")
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
