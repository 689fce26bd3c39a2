"""Shared plumbing of the atheris fuzz targets in fuzz/.

Every target is a script `fuzz/fuzz_<name>.py` with `TestOneInput(data: bytes)` and `seeds()`;
run it as `python fuzz/fuzz_<name>.py -runs=N CORPUS_DIR` (libFuzzer flags), or through
`fuzz/run.py`, which counts the inputs executed and collects crashes. An input "crashes" when it
raises anything but the exception types the surface documents, kills the process, or trips a
property check (AssertionError).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

# Development: the source tree with its in-place _core (scripts/dev_build.sh) wins, like
# `PYTHONPATH=python:training`. Elsewhere (CI installs the package) the installed copy is used:
# the source tree has no compiled _core there. A package named explicitly on $PYTHONPATH wins over
# both: fuzz/run.py points its children at a frozen snapshot of the package, and scripts/sanitize.sh
# at its copy with the ASan _core.
_ROOT = Path(__file__).resolve().parents[1]


def explicit_package_dir(pythonpath: str | None) -> Path | None:
    """The first $PYTHONPATH entry that holds an `upper_fast` package, or None."""
    for entry in (pythonpath or "").split(os.pathsep):
        if entry and (Path(entry) / "upper_fast" / "__init__.py").is_file():
            return Path(entry)
    return None


if any((_ROOT / "python" / "upper_fast").glob("_core*.so")):
    _paths = [_ROOT / "training"]
    if explicit_package_dir(os.environ.get("PYTHONPATH")) is None:
        _paths.append(_ROOT / "python")
    for _p in _paths:
        if str(_p) not in sys.path:
            sys.path.insert(0, str(_p))

SKIP_EXIT_CODE = 0
REPLAY_ENV = "UPPER_FAST_FUZZ_REPLAY"


def instrumented() -> "object":
    """Context manager for importing the code under test: atheris coverage instrumentation of
    upper_fast only (numpy, pyarrow, onnxruntime stay plain: instrumenting them costs seconds per
    process and their coverage is not what we steer by); nothing at all when replaying inputs."""
    import contextlib

    if os.environ.get(REPLAY_ENV):
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["upper_fast"])
SKIP_PREFIX = "FUZZ-SKIP:"


def skip(reason: str) -> None:
    """Ends the target cleanly when the surface it fuzzes is not in the package yet."""
    print(f"{SKIP_PREFIX} {reason}", flush=True)
    sys.exit(SKIP_EXIT_CODE)


SCRATCH_ENV = "UPPER_FAST_FUZZ_SCRATCH"
SCRATCH_PREFIX = "upper_fast_fuzz_"


def scratch_base() -> Path | None:
    """Where scratch directories go: in memory where the OS offers it (fast, no disk wear)."""
    return Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_scratch(base: Path | None = None) -> int:
    """Removes `upper_fast_fuzz_<pid>_*` scratch directories whose process is gone; returns how many.

    A fuzz target never runs its atexit handlers: libFuzzer ends the process with C exit() (after
    -runs, at -max_total_time) or dies on a crash/timeout, all without Python's finalisation, so
    every direct `python fuzz/fuzz_<t>.py` run used to leave its directory behind. (fuzz/run.py also
    puts its children's directories under one root of its own and removes that.)"""
    import re
    import shutil
    import tempfile

    base = Path(tempfile.gettempdir()) if base is None else base
    pattern = re.compile(rf"{SCRATCH_PREFIX}(\d+)_[A-Za-z0-9_]{{8}}")
    removed = 0
    try:
        entries = list(base.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    return removed


def scratch_dir() -> Path:
    """A per-process scratch directory: under $UPPER_FAST_FUZZ_SCRATCH when fuzz/run.py set it (it
    removes that root however the child ends), else in /dev/shm (or the temp dir), removed at exit
    where Python gets to run its atexit handlers, and by the next process's stale sweep otherwise."""
    import atexit
    import shutil
    import tempfile

    root = os.environ.get(SCRATCH_ENV)
    if root and Path(root).is_dir():
        base: Path | None = Path(root)
    else:
        base = scratch_base()
        remove_stale_scratch(base)
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_", dir=base))
    atexit.register(shutil.rmtree, path, True)
    return path


def write_seeds(argv: list[str], seeds: list[bytes]) -> None:
    """Puts the seed inputs into the first corpus directory on the command line when it is empty."""
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs:
        return
    corpus = Path(dirs[0])
    if corpus.is_file():  # replaying saved inputs, not fuzzing
        return
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(seed)


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]],
         setup: Callable[[], None] | None = None) -> None:
    """Standard entry point: one-time setup (outside libFuzzer's per-input timeout), seeds the
    corpus, then hands over to libFuzzer (never returns)."""
    import atheris

    if setup is not None:
        setup()
    write_seeds(sys.argv, seeds())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def mutate(seed: bytes, fdp: "object") -> bytes:
    """Structure-aware damage to a valid file, driven by the fuzzer's bytes: truncation at an offset,
    bit flips, overwritten spans, extreme integers written over header fields, duplicated or
    deleted spans. The native readers are not coverage-instrumented, so starting from a valid
    file reaches far deeper than raw bytes would."""
    buf = bytearray(seed)
    n_ops = fdp.ConsumeIntInRange(1, 4)
    for _ in range(n_ops):
        if not buf:
            break
        op = fdp.ConsumeIntInRange(0, 6)
        pos = fdp.ConsumeIntInRange(0, len(buf) - 1)
        if op == 0:  # truncate
            del buf[pos:]
        elif op == 1:  # flip one bit
            buf[pos] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif op == 2:  # overwrite a span with fuzzer bytes
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
            buf[pos : pos + len(chunk)] = chunk
        elif op == 3:  # extreme little-endian integer over a (likely header) field
            width = (1, 2, 4, 8)[fdp.ConsumeIntInRange(0, 3)]
            value = (0, 1, (1 << (8 * width - 1)) - 1, (1 << (8 * width - 1)), (1 << (8 * width)) - 1)[
                fdp.ConsumeIntInRange(0, 4)
            ]
            pos = min(pos, fdp.ConsumeIntInRange(0, 64))  # headers live near the start
            buf[pos : pos + width] = value.to_bytes(width, "little")
        elif op == 4:  # delete a span
            del buf[pos : pos + fdp.ConsumeIntInRange(1, 64)]
        elif op == 5:  # duplicate a span
            span = bytes(buf[pos : pos + fdp.ConsumeIntInRange(1, 64)])
            buf[pos:pos] = span
        else:  # append garbage
            buf += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 32))
    return bytes(buf)


# --- adapters over the public API, shared by the fuzz targets and tests/serving/test_reliability_*.py ---


def make_index(n: int = 64, dim: int = 12, dtype: str = "f32", seed: int = 0) -> "tuple[object, object]":
    """A small upper_fast.Index over seeded random unit vectors; returns (index, vectors (n, dim) f32)."""
    import numpy as np

    import upper_fast

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = upper_fast.Index(dim, dtype=dtype, M=8, ef_construction=40, seed=seed)
    index.add(np.arange(n, dtype=np.int64), vectors)
    return index, vectors


def index_search(index: object, queries: "object", k: int) -> "tuple[object, object]":
    """(ids, scores) of index.search as numpy arrays, whatever the result type."""
    res = index.search(queries, k)
    return res.ids, res.scores


_BUNDLE_ENV = "UPPER_FAST_FUZZ_BUNDLE"
_bundle_cache: list[Path] = []


def make_bundle(root: "Path") -> "Path":
    """A tiny real bundle (ONNX query tower exported by torch) from the serving tests' helper,
    tests/serve_tiny.py; raises ImportError when that helper (or torch) is absent. A bundle named
    by $UPPER_FAST_FUZZ_BUNDLE is copied instead (exporting takes seconds)."""
    import shutil

    given = os.environ.get(_BUNDLE_ENV)
    if given:
        shutil.copytree(given, Path(root) / "bundle")
        return Path(root) / "bundle"
    tests_dir = str(_ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import serve_tiny

    Path(root).mkdir(parents=True, exist_ok=True)
    made = serve_tiny.tiny_bundle(Path(root))
    return Path(made[0] if isinstance(made, tuple) else made)


def cached_bundle() -> "Path":
    """One tiny bundle per process (built on first use, removed at exit); also exported in
    $UPPER_FAST_FUZZ_BUNDLE so child fuzz processes copy it instead of exporting again."""
    if not _bundle_cache:
        path = make_bundle(scratch_dir())
        _bundle_cache.append(path)
        os.environ[_BUNDLE_ENV] = str(path)
    return _bundle_cache[0]


# --- known bugs: found by fuzzing, reported to their owners (docs/reliability.md "Bugs found") ---
# id -> (target, exception types, files where raised, description). While a bug is open the
# campaign tolerates (and counts) exceptions of those types raised in those upper_fast files, so it
# can look for other bugs; UPPER_FAST_FUZZ_STRICT=1 turns them back into crashes (regression replay).
KNOWN_BUGS: dict[str, tuple[str, frozenset[str], frozenset[str], str]] = {}


def known_bug(target: str, exc: BaseException) -> str | None:
    """The id of the open known bug this exception is, or None (strict mode: always None)."""
    if os.environ.get("UPPER_FAST_FUZZ_STRICT"):
        return None
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "upper_fast" in f.filename]
    where = Path(frames[-1].filename).name if frames else ""
    for bug_id, (t, types, files, _) in KNOWN_BUGS.items():
        if t == target and type(exc).__name__ in types and where in files:
            print(f"FUZZ-KNOWN: {bug_id} {type(exc).__name__} in {where}", file=sys.stderr, flush=True)
            return bug_id
    return None
