"""SIMD kernels vs numpy oracles, at every level this CPU supports.

In-process: each level's table through simd_dot(level=...). Forced: the whole active table
(dot kernels and the top-k micro-kernel) in a subprocess under UPPER_FAST_SIMD.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import upper_fast
from upper_fast import _core

from _paths import child_env

HERE = Path(__file__).resolve().parent
ORDER = ("scalar", "avx2", "avx512")
SUPPORTED = ORDER[: ORDER.index(upper_fast.cpu_simd_level()) + 1]
DIMS = (1, 3, 17, 97, 128, 768)


def level_param(level: str):
    return pytest.param(
        level,
        marks=pytest.mark.skipif(
            level not in SUPPORTED,
            reason=f"this CPU's best SIMD level is {upper_fast.cpu_simd_level()!r}, not {level!r}",
        ),
    )


LEVELS = [level_param(lv) for lv in ORDER]


def run_forced(level: str, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """Runs tests/native/simd_check.py (or `code`) in a fresh interpreter with UPPER_FAST_SIMD=level."""
    env = child_env(UPPER_FAST_SIMD=level)
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, str(HERE / "simd_check.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def bf16(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def widen(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("d", DIMS)
def test_dot_kernels_match_numpy(level: str, d: int) -> None:
    rng = np.random.default_rng(d)
    a = rng.standard_normal(d).astype(np.float32)
    b = rng.standard_normal(d).astype(np.float32)
    tol = 1e-5 * float(np.abs(a).astype(np.float64) @ np.abs(b)) + 1e-6
    assert _core.simd_dot(a, b, level) == pytest.approx(a.astype(np.float64) @ b, abs=tol)
    bb, ab = bf16(b), bf16(a)
    assert _core.simd_dot(a, bb, level) == pytest.approx(a.astype(np.float64) @ widen(bb), abs=tol)
    assert _core.simd_dot(ab, bb, level) == pytest.approx(widen(ab).astype(np.float64) @ widen(bb), abs=4 * tol)
    ia = rng.integers(-128, 128, d, dtype=np.int8)
    ib = rng.integers(-128, 128, d, dtype=np.int8)
    assert _core.simd_dot(ia, ib, level) == int(ia.astype(np.int64) @ ib.astype(np.int64))


@pytest.mark.parametrize("level", LEVELS)
def test_simd_matches_scalar_reference_at_odd_dims(level: str) -> None:
    rng = np.random.default_rng(1)
    for d in range(1, 80):
        a = rng.standard_normal(d).astype(np.float32)
        b = rng.standard_normal(d).astype(np.float32)
        ref = _core.simd_dot(a, b, "scalar")
        assert abs(_core.simd_dot(a, b, level) - ref) <= 1e-5 * (1 + np.abs(a) @ np.abs(b))
        ia = rng.integers(-128, 128, d, dtype=np.int8)
        assert _core.simd_dot(ia, ia[::-1].copy(), level) == _core.simd_dot(ia, ia[::-1].copy(), "scalar")


def test_unsupported_level_in_process_is_value_error() -> None:
    with pytest.raises(ValueError, match="level must be"):
        _core.simd_dot(np.ones(3, np.float32), np.ones(3, np.float32), "sse9")
    if "avx512" not in SUPPORTED:
        with pytest.raises(ValueError, match="not supported by this CPU"):
            _core.simd_dot(np.ones(3, np.float32), np.ones(3, np.float32), "avx512")


def test_dot_dtype_and_shape_errors() -> None:
    f = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="dtype pair"):
        _core.simd_dot(np.ones(4, np.int8), f)
    with pytest.raises(TypeError, match="astype"):
        _core.simd_dot(np.ones(4, np.float64), f)
    with pytest.raises(ValueError, match="differ in length"):
        _core.simd_dot(f, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="ascontiguousarray"):
        _core.simd_dot(np.ones(8, np.float32)[::2], f)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _core.simd_dot([1.0, 2.0], f)


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_runs_every_kernel(level: str) -> None:
    out = run_forced(level, level)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ok {level}" in out.stdout


def test_forcing_an_unsupported_or_unknown_level_is_a_value_error_at_import() -> None:
    bad = ["nonsense"] + [lv for lv in ORDER if lv not in SUPPORTED]
    for level in bad:
        out = run_forced(level, code="import upper_fast")
        # A Python exception (exit status 1 with a traceback), never a signal or an abort.
        assert out.returncode == 1, (level, out.returncode, out.stderr)
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("ValueError:"), out.stderr
        assert "UPPER_FAST_SIMD" in last or "not supported by this CPU" in last, last


def test_forced_level_is_reported() -> None:
    for level in SUPPORTED:
        out = run_forced(level, code="import upper_fast; print(upper_fast.simd_level())")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == level
