"""Fuzz target "index_file": Index.load on damaged index files.

Seeds are valid index files (f32, bf16, i8 storage); each input either is raw bytes or a
structure-aware mutation of a seed (truncation, bit flips, extreme header integers, spliced spans;
see common.mutate). Allowed outcomes: upper_fast.FormatError / another OSError, or a load that
succeeds AND answers exactly like the undamaged index (a mutation that changed no meaningful byte).
A load that succeeds but answers differently is a silent wrong answer: a crash.
"""

from __future__ import annotations

import sys

import atheris
import common
import numpy as np

with common.instrumented():
    import upper_fast

_STATE: dict[str, object] = {}
DTYPES = ("f32", "bf16", "i8")


def _setup() -> None:
    if "seeds" in _STATE:
        return
    if not hasattr(upper_fast, "Index"):
        common.skip("upper_fast.Index is not in the package yet")
    scratch = common.scratch_dir()
    seeds, answers = [], []
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((4, 12)).astype(np.float32)
    for i, dtype in enumerate(DTYPES):
        index, _ = common.make_index(n=40, dim=12, dtype=dtype, seed=i)
        path = scratch / f"seed-{dtype}.upf"
        index.save(str(path))
        seeds.append(path.read_bytes())
        answers.append(common.index_search(index, queries, 5))
    _STATE.update(seeds=seeds, answers=answers, queries=queries, path=scratch / "input.upf")


def TestOneInput(data: bytes) -> None:
    _setup()
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, len(DTYPES))
    if which == len(DTYPES):
        blob, origin = fdp.ConsumeBytes(fdp.remaining_bytes()), None
    else:
        blob, origin = common.mutate(_STATE["seeds"][which], fdp), which
    path = _STATE["path"]
    path.write_bytes(blob)
    try:
        index = upper_fast.Index.load(str(path))
    except OSError:  # upper_fast.FormatError is an OSError
        return
    # Loaded: only acceptable if it is (equivalent to) an undamaged seed.
    assert origin is not None, "raw fuzz bytes loaded as an index"
    ids, scores = common.index_search(index, _STATE["queries"], 5)
    want_ids, want_scores = _STATE["answers"][origin]
    assert np.array_equal(ids, want_ids) and np.array_equal(scores, want_scores), (
        f"damaged {DTYPES[origin]} file loaded and answers differently (silent wrong answer); "
        f"{len(blob)} bytes vs {len(_STATE['seeds'][origin])}"
    )


def seeds() -> list[bytes]:
    # Inputs are mutation programs over the valid files built in _setup; a few starting programs.
    return [bytes([0, 1, 0, 0]), bytes([1, 2, 1, 7, 3]), bytes([2, 3, 3, 0, 1, 2]), b"\x03UPFINDEX\x01\x00\x00\x00"]


if __name__ == "__main__":
    common.main(TestOneInput, seeds, _setup)
    sys.exit(0)
