"""Damaged files: index files truncated at sampled offsets, bit-flipped, of another format version or
from another model must raise a clean OSError (upper_fast.FormatError), never crash or load into a
silently different index; a save killed midway leaves the previous file loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import upper_fast

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import common  # noqa: E402  (fuzz/common.py: shared adapters)
from _paths import child_env  # noqa: E402  (tests/_paths.py: children import the package under test)

pytestmark = pytest.mark.skipif(not hasattr(upper_fast, "Index"), reason="upper_fast.Index is not merged yet")

DTYPES = ("f32", "bf16", "i8")


def _saved(tmp_path: Path, dtype: str, n: int = 48, dim: int = 10, seed: int = 0) -> tuple[Path, object, np.ndarray]:
    index, vectors = common.make_index(n=n, dim=dim, dtype=dtype, seed=seed)
    path = tmp_path / f"{dtype}-{seed}.upf"
    index.save(str(path))
    return path, index, vectors


def _load_all_in_subprocess(paths: list[Path]) -> list[str]:
    """Loads each file in a child process, so a native crash shows as a signal (not a dead test
    run); returns one outcome per file: 'FormatError', another exception name, or 'LOADED'."""
    code = textwrap.dedent(
        """
        import sys, upper_fast
        for p in sys.argv[1:]:
            try:
                upper_fast.Index.load(p)
                print("LOADED", flush=True)
            except BaseException as exc:
                print(type(exc).__name__, flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=120,
                         env=child_env())
    assert out.returncode == 0, f"loader child died (rc={out.returncode}): {out.stderr[-2000:]}"
    return out.stdout.split()


def _sample_offsets(size: int, n_random: int, seed: int) -> list[int]:
    """Every offset in the first 128 bytes (header), the last 64, and random ones in between."""
    rng = np.random.default_rng(seed)
    head = range(0, min(size, 128))
    tail = range(max(0, size - 64), size)
    middle = rng.integers(0, size, n_random).tolist() if size else []
    return sorted(set(head) | set(tail) | set(middle))


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_at_sampled_offsets(tmp_path: Path, dtype: str) -> None:
    path, _, _ = _saved(tmp_path, dtype)
    blob = path.read_bytes()
    offsets = _sample_offsets(len(blob), 60, seed=len(blob))
    bad = tmp_path / "truncated.upf"
    for off in offsets:
        bad.write_bytes(blob[:off])
        with pytest.raises(upper_fast.FormatError):
            upper_fast.Index.load(str(bad))
    # The untouched file still loads and answers.
    assert len(upper_fast.Index.load(str(path))) == 48
    print(f"{dtype}: {len(offsets)} truncation offsets of a {len(blob)}-byte file rejected")


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_flips_rejected_or_harmless(tmp_path: Path, dtype: str) -> None:
    path, index, vectors = _saved(tmp_path, dtype)
    blob = path.read_bytes()
    rng = np.random.default_rng(11)
    want = common.index_search(index, vectors[:5], 4)
    bad = tmp_path / "flipped.upf"
    positions = sorted(set(range(min(len(blob), 96))) | set(rng.integers(0, len(blob), 120).tolist()))
    loaded = 0
    for pos in positions:
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(damaged))
        try:
            got = upper_fast.Index.load(str(bad))
        except upper_fast.FormatError:
            continue
        loaded += 1
        ids, scores = common.index_search(got, vectors[:5], 4)
        assert np.array_equal(ids, want[0]) and np.array_equal(scores, want[1]), f"flip at byte {pos} loaded silently wrong"
    # With a payload checksum every flip must be caught.
    assert loaded == 0, f"{loaded} of {len(positions)} bit flips loaded without a FormatError"


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_header_fields_in_subprocess(tmp_path: Path, dtype: str) -> None:
    """Every 4- and 8-byte aligned field of the first 128 bytes set to 0, 1, 0x7f.., 0x80.., 0xff..:
    the riskiest damage (sizes and counts a reader might trust), so it runs in a child process."""
    path, _, _ = _saved(tmp_path, dtype)
    blob = path.read_bytes()
    paths = []
    for width in (4, 8):
        for pos in range(0, min(128, len(blob)) - width + 1, width):
            for value in (0, 1, (1 << (8 * width - 1)) - 1, 1 << (8 * width - 1), (1 << (8 * width)) - 1):
                damaged = blob[:pos] + value.to_bytes(width, "little") + blob[pos + width :]
                if damaged == blob:
                    continue
                p = tmp_path / f"f{width}-{pos}-{value:x}.upf"
                p.write_bytes(damaged)
                paths.append(p)
    outcomes = _load_all_in_subprocess(paths)
    assert len(outcomes) == len(paths)
    assert set(outcomes) == {"FormatError"}, {o: outcomes.count(o) for o in set(outcomes)}


def test_other_format_version_and_foreign_files(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path, "f32")
    blob = path.read_bytes()
    # Format version: the little-endian u32 right after the 8-byte magic.
    for version in (0, 2, 99, 0xFFFFFFFF):
        bad = tmp_path / f"v{version}.upf"
        bad.write_bytes(blob[:8] + version.to_bytes(4, "little") + blob[12:])
        with pytest.raises(upper_fast.FormatError, match="(?i)version|checksum|damaged|corrupt"):
            upper_fast.Index.load(str(bad))
    foreign = {
        "empty": b"",
        "text": b"hello, this is not an index\n" * 10,
        "npy": b"\x93NUMPY\x01\x00" + b"\x00" * 200,
        "magic_only": blob[:8],
        "header_only": blob[:88],
        "zeros": b"\x00" * len(blob),
    }
    for name, data in foreign.items():
        bad = tmp_path / f"{name}.upf"
        bad.write_bytes(data)
        with pytest.raises(upper_fast.FormatError):
            upper_fast.Index.load(str(bad))
    # A raw hnswlib file (what a user might pass by mistake).
    hnswlib = pytest.importorskip("hnswlib")
    h = hnswlib.Index(space="ip", dim=10)
    h.init_index(max_elements=16)
    h.add_items(np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32))
    raw = tmp_path / "raw_hnswlib.bin"
    h.save_index(str(raw))
    with pytest.raises(upper_fast.FormatError):
        upper_fast.Index.load(str(raw))


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        upper_fast.Index.load(str(tmp_path / "absent.upf"))
    with pytest.raises(OSError):
        upper_fast.Index.load(str(tmp_path))  # a directory
    index, _ = common.make_index(n=8, dim=4)
    with pytest.raises(OSError):
        index.save(str(tmp_path / "no" / "such" / "dir" / "x.upf"))


def test_file_from_another_model_is_not_mixed_up(tmp_path: Path) -> None:
    """Two different indexes: loading each gives back its own answers (no cross-talk via caches)."""
    a_path, a, a_vec = _saved(tmp_path, "f32", dim=10, seed=1)
    b_path, b, _ = _saved(tmp_path, "f32", dim=10, seed=2)
    la, lb = upper_fast.Index.load(str(a_path)), upper_fast.Index.load(str(b_path))
    for orig, loaded in ((a, la), (b, lb)):
        want = common.index_search(orig, a_vec[:6], 5)
        got = common.index_search(loaded, a_vec[:6], 5)
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    # Another dimension: searching with this model's queries must fail cleanly, not read out of bounds.
    c_path, _, _ = _saved(tmp_path, "f32", dim=7, seed=3)
    lc = upper_fast.Index.load(str(c_path))
    with pytest.raises(ValueError):
        lc.search(a_vec[:2], 3)


_SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {fuzz!r})
    import upper_fast
    path, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(n)
    index = upper_fast.Index(32, dtype="f32", M=8, ef_construction=20, seed=0)
    index.add(np.arange(n, dtype=np.int64), rng.standard_normal((n, 32)).astype(np.float32))
    print("READY", flush=True)
    while True:
        index.save(path)
    """
)


def test_save_killed_midway_leaves_previous_file_loadable(tmp_path: Path) -> None:
    """A saver process rewriting the file in a loop is SIGKILLed at random moments (at least 4
    times); after every kill the file must load with all its vectors."""
    target = tmp_path / "index.upf"
    first, _, _ = _saved(tmp_path, "f32", n=2000, dim=32)
    os.replace(first, target)
    script = tmp_path / "saver.py"
    script.write_text(_SAVER.format(fuzz=str(Path(common.__file__).parent)))
    rng = np.random.default_rng(5)
    kills = 0
    deadline = time.monotonic() + (4.0 if not os.environ.get("UPPER_FAST_SANITIZED") else 15.0)
    while kills < 4 or (time.monotonic() < deadline and kills < 12):
        proc = subprocess.Popen([sys.executable, str(script), str(target), "2000"], stdout=subprocess.PIPE, text=True,
                                env=child_env())
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        loaded = upper_fast.Index.load(str(target))
        assert len(loaded) == 2000
    print(f"save killed {kills} times; the previous file loaded every time")
