"""Index files: round trip, header, atomic write, and damaged/foreign/future files -> FormatError."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

import upper_fast as uf

HEADER_SIZE = 88
M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (
    11400714785074694791,
    14029467366897019727,
    1609587929392839161,
    9650029242287828579,
    2870177450012600261,
)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * P2) & M64, 31) * P1) & M64


def xxh64(data: bytes) -> int:
    """Reference xxHash64 (seed 0), to build files whose checksums are valid but content is not."""
    n, p = len(data), 0
    if n >= 32:
        v = [(P1 + P2) & M64, P2, 0, (-P1) & M64]
        while p + 32 <= n:
            for i in range(4):
                v[i] = _round(v[i], int.from_bytes(data[p + 8 * i : p + 8 * i + 8], "little"))
            p += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for x in v:
            h = ((h ^ _round(0, x)) * P1 + P4) & M64
    else:
        h = P5
    h = (h + n) & M64
    while p + 8 <= n:
        h = (_rotl(h ^ _round(0, int.from_bytes(data[p : p + 8], "little")), 27) * P1 + P4) & M64
        p += 8
    if p + 4 <= n:
        h = (_rotl(h ^ (int.from_bytes(data[p : p + 4], "little") * P1 & M64), 23) * P2 + P3) & M64
        p += 4
    while p < n:
        h = (_rotl(h ^ (data[p] * P5 & M64), 11) * P1) & M64
        p += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    return h ^ (h >> 32)


def test_reference_xxh64_known_values() -> None:
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1


def small_index(dtype: str = "i8", n: int = 400, dim: int = 12) -> tuple[uf.Index, np.ndarray]:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = uf.Index(dim, dtype, M=8, ef_construction=40, seed=3)  # type: ignore[arg-type]
    index.add(np.arange(100, 100 + n, dtype=np.int64), x)
    return index, x


def fix_checksums(blob: bytearray) -> bytes:
    """Recompute the payload and header checksums after editing a saved file."""
    blob[72:80] = struct.pack("<Q", xxh64(bytes(blob[HEADER_SIZE:])))
    blob[80:88] = struct.pack("<Q", xxh64(bytes(blob[:80])))
    return bytes(blob)


@pytest.mark.parametrize("dtype", ["f32", "bf16", "i8"])
def test_round_trip_same_results(tmp_path: Path, dtype: str) -> None:
    index, x = small_index(dtype)
    index.mark_deleted(np.array([100, 105], dtype=np.int64))
    index.ef = 77
    index.rescore_factor = 2.5
    path = tmp_path / "a.upf"
    index.save(path)
    assert sorted(os.listdir(tmp_path)) == ["a.upf"]  # no temp file left behind
    header = uf.Index.read_header(path)
    assert header["format_version"] == 1 and header["dtype"] == dtype and header["dim"] == 12
    assert header["M"] == 8 and header["ef_construction"] == 40 and header["ef"] == 77 and header["seed"] == 3
    assert header["count"] == 400 and header["live"] == 398 and header["rescore_factor"] == 2.5
    assert header["payload_size"] == path.stat().st_size - HEADER_SIZE
    loaded = uf.Index.load(str(path))
    assert (loaded.dim, loaded.dtype, loaded.M, loaded.ef, len(loaded)) == (12, dtype, 8, 77, 398)
    assert loaded.rescore_factor == 2.5
    a, b = index.search(x[:40], 7), loaded.search(x[:40], 7)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert 100 not in loaded and 101 in loaded
    # The loaded index keeps growing.
    loaded.add(np.array([1], dtype=np.int64), x[:1] * -1)
    assert loaded.search(-x[0], 1).ids[0, 0] == 1
    # Saving over an existing file replaces it.
    loaded.save(path)
    assert uf.Index.read_header(path)["count"] == 401


def test_empty_index_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "empty.upf"
    uf.Index(5, "bf16").save(path)
    loaded = uf.Index.load(path)
    assert len(loaded) == 0 and loaded.search(np.ones(5, dtype=np.float32), 2).counts.tolist() == [0]
    loaded.add(np.array([4], dtype=np.int64), np.ones((1, 5), dtype=np.float32))
    assert loaded.search(np.ones(5, dtype=np.float32), 2).ids.tolist() == [[4, -1]]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        uf.Index.load(tmp_path / "nope.upf")
    with pytest.raises(FileNotFoundError):
        uf.Index.read_header(tmp_path / "nope.upf")
    with pytest.raises(FileNotFoundError):
        uf.Index(3).save(tmp_path / "no_such_dir" / "x.upf")
    with pytest.raises(OSError):
        uf.Index.load(tmp_path)  # a directory


def test_format_error_is_oserror() -> None:
    assert issubclass(uf.FormatError, OSError)


@pytest.mark.parametrize(
    "content",
    [b"", b"UPF", b"hello world, not an index" * 10, b"UPFINDEX" + bytes(200), os.urandom(4096)],
)
def test_foreign_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(uf.FormatError):
        uf.Index.load(path)
    with pytest.raises(uf.FormatError):
        uf.Index.read_header(path)


def test_future_version(tmp_path: Path) -> None:
    index, _ = small_index()
    path = tmp_path / "v.upf"
    index.save(path)
    blob = bytearray(path.read_bytes())
    blob[8:12] = struct.pack("<I", 2)
    path.write_bytes(fix_checksums(blob))
    with pytest.raises(uf.FormatError, match="version 2"):
        uf.Index.load(path)
    with pytest.raises(uf.FormatError, match="version 2"):
        uf.Index.read_header(path)


def test_truncated_files(tmp_path: Path) -> None:
    index, _ = small_index()
    src = tmp_path / "full.upf"
    index.save(src)
    blob = src.read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted({0, 1, 7, 8, 40, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 50, len(blob) - 1}
                  | set(rng.integers(0, len(blob), 40).tolist()))
    path = tmp_path / "cut.upf"
    for cut in cuts:
        path.write_bytes(blob[:cut])
        with pytest.raises(uf.FormatError):
            uf.Index.load(path)
    path.write_bytes(blob + b"\0")
    with pytest.raises(uf.FormatError, match="trailing"):
        uf.Index.load(path)


def test_bit_flips(tmp_path: Path) -> None:
    index, _ = small_index("bf16")
    src = tmp_path / "full.upf"
    index.save(src)
    blob = src.read_bytes()
    rng = np.random.default_rng(1)
    positions = set(range(HEADER_SIZE)) | set(rng.integers(HEADER_SIZE, len(blob), 150).tolist())
    path = tmp_path / "flip.upf"
    for pos in sorted(positions):
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        with pytest.raises(uf.FormatError):
            uf.Index.load(path)


def test_valid_checksum_but_inconsistent_graph(tmp_path: Path) -> None:
    """A file whose checksums match but whose graph would make hnswlib read out of bounds."""
    index, _ = small_index("f32", n=50, dim=4)
    src = tmp_path / "ok.upf"
    index.save(src)
    blob = src.read_bytes()
    assert uf.Index.load(src).search(np.ones(4, dtype=np.float32), 3).counts.tolist() == [3]
    links0 = 2 * 8 * 4 + 4
    first = HEADER_SIZE + 96  # level-0 block of element 0
    edits = {
        "neighbour out of range": (first + 4, struct.pack("<I", 10_000)),
        "too many links": (first, struct.pack("<H", 17)),
        "element count": (HEADER_SIZE + 16, struct.pack("<Q", 51)),
        "entry point": (HEADER_SIZE + 52, struct.pack("<I", 49_999)),
        "data size": (HEADER_SIZE + 24, struct.pack("<Q", links0 + 999)),
    }
    path = tmp_path / "bad.upf"
    for pos, value in edits.values():
        blob2 = bytearray(blob)
        blob2[pos : pos + len(value)] = value
        path.write_bytes(fix_checksums(blob2))
        with pytest.raises(uf.FormatError, match="damaged"):
            uf.Index.load(path)


def test_header_only_read_is_cheap_and_does_not_need_payload(tmp_path: Path) -> None:
    index, _ = small_index()
    src = tmp_path / "h.upf"
    index.save(src)
    path = tmp_path / "head_only.upf"
    path.write_bytes(src.read_bytes()[:HEADER_SIZE])
    assert uf.Index.read_header(path)["count"] == 400
    with pytest.raises(uf.FormatError, match="truncated"):
        uf.Index.load(path)
