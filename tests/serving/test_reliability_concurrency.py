"""Concurrency and process safety: 8 threads searching while ids are deleted (0 errors, every result
consistent with a numpy oracle), no RSS growth across rounds, and fork after use."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import upper_fast

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import common  # noqa: E402

needs_index = pytest.mark.skipif(not hasattr(upper_fast, "Index"), reason="upper_fast.Index is not merged yet")
SANITIZED = bool(os.environ.get("UPPER_FAST_SANITIZED"))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _check_result(ids: np.ndarray, scores: np.ndarray, queries: np.ndarray, vectors: np.ndarray, deleted_before: set[int], k: int) -> None:
    """Invariants of one search answered while deletions run: valid ids, no duplicates, sorted scores,
    scores equal to the exact inner product, ids deleted before the search began never returned."""
    assert ids.shape == (len(queries), k) and scores.shape == (len(queries), k)
    for row in range(len(queries)):
        real = ids[row][ids[row] >= 0]
        assert len(set(real.tolist())) == len(real), "duplicate ids"
        assert np.all(ids[row][len(real):] == -1), "padding must be a suffix"
        s = scores[row][: len(real)]
        assert np.all(np.diff(s) <= 1e-6), "scores not sorted"
        exact = vectors[real] @ queries[row]
        np.testing.assert_allclose(s, exact, rtol=1e-4, atol=1e-4)
        assert not (set(real.tolist()) & deleted_before), "an id deleted before the search began was returned"


@needs_index
def test_eight_threads_search_while_deleting() -> None:
    n, dim, k = 3000, 16, 10
    index, vectors = common.make_index(n=n, dim=dim, seed=4)
    rng = np.random.default_rng(9)
    queries = rng.standard_normal((64, dim)).astype(np.float32)
    deleted: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0] * 8

    def searcher(t: int) -> None:
        local = np.random.default_rng(t)
        try:
            while not stop.is_set():
                q = queries[local.integers(0, len(queries), 4)]
                with lock:
                    before = set(deleted)
                ids, scores = common.index_search(index, q, k)
                _check_result(ids, scores, q, vectors, before, k)
                searches[t] += 1
        except BaseException as exc:  # noqa: BLE001 - every failure is reported by the main thread
            errors.append(exc)
            stop.set()

    def deleter() -> None:
        order = rng.permutation(n)[: n // 2]
        try:
            for start in range(0, len(order), 25):
                if stop.is_set():
                    return
                batch = order[start : start + 25].astype(np.int64)
                index.mark_deleted(batch)
                with lock:
                    deleted.update(batch.tolist())
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(8)]
    threads.append(threading.Thread(target=deleter))
    for th in threads:
        th.start()
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    assert sum(searches) > 50, searches
    assert len(index) == n - len(deleted)
    print(f"8 threads x 2.0 s: {sum(searches)} searches, {len(deleted)} deletions, 0 errors")


@needs_index
@pytest.mark.skipif(SANITIZED, reason="under ASan, RSS measures its quarantine of freed memory (it grows by design), "
                    "not leaks; the uninstrumented suite runs this test and LeakSanitizer checks the native tests")
def test_no_rss_growth_across_rounds() -> None:
    index, vectors = common.make_index(n=2000, dim=16, seed=6)
    queries = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    for _ in range(30):  # warm-up: allocator pools, thread-local scratch
        common.index_search(index, queries, 20)
    samples = []
    for _ in range(6):
        for _ in range(50):
            common.index_search(index, queries, 20)
            common.index_search(index, queries[:1], 5)
        samples.append(rss_bytes())
    growth = samples[-1] - samples[1]
    # Between the samples compared: 4 rounds x 50 x (64 + 1) = 13,000 queries, so a leak of 256
    # bytes per query would show as > 3 MiB.
    assert growth < 2 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB across rounds: {samples}"
    print(f"RSS across 4 rounds of 13,000 queries: {growth / 2**10:+.0f} KiB")


def _child_search(path: str, queue: "multiprocessing.Queue") -> None:
    import numpy as np

    import upper_fast as uf

    idx = uf.Index.load(path)
    q = np.ones((2, 16), dtype=np.float32)
    res = idx.search(q, 3)
    queue.put((res.ids.tolist(), len(idx)))


@needs_index
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_use(tmp_path: Path) -> None:
    """The parent uses the index (and its worker threads); a forked child then uses the same
    object, loads a file and searches with several threads. No deadlock, same answers."""
    index, vectors = common.make_index(n=1500, dim=16, seed=8)
    queries = np.ascontiguousarray(vectors[:64])
    want = common.index_search(index, queries, 5)
    path = tmp_path / "x.upf"
    index.save(str(path))

    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            got = common.index_search(index, queries, 5)
            ok = np.array_equal(got[0], want[0])
            loaded = upper_fast.Index.load(str(path))
            ok = ok and np.array_equal(common.index_search(loaded, queries, 5)[0], want[0])
            code = 0 if ok else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("forked child hung (deadlock after fork?)")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_search, args=(str(path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    q = np.ones((2, 16), dtype=np.float32)
    expect = common.index_search(index, q, 3)[0].tolist()
    assert all(r == (expect, 1500) for r in results), results


def _sibling_bundle(a: Path, out: Path) -> Path:
    """Bundle B: bundle A's model and tables with the product vectors rolled by one row, so the
    same query has different (and known) answers in A and B."""
    import json

    import pyarrow.parquet as pq

    from upper_fast.bundle import write_bundle

    m = json.loads((a / "manifest.json").read_text())
    lines = lambda name: (a / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    write_bundle(
        out, query_tower_onnx=a / "query_tower.onnx", featurizer_config=json.loads((a / "featurizer.json").read_text()),
        query_keys=lines("query_nodes.txt"), query_graph=np.load(a / "query_graph.npy"),
        product_ids=lines("product_ids.txt"), product_graph=np.load(a / "product_graph.npy"),
        product_vectors=np.ascontiguousarray(np.roll(np.load(a / "product_vectors.npy"), 1, axis=0)),
        quality=np.load(a / "quality.npy"), hydration=json.loads((a / "hydration.json").read_text()),
        thresholds=json.loads((a / "thresholds.json").read_text()), users=pq.read_table(a / "users.parquet"),
        countries=json.loads((a / "countries.json").read_text()), hist_items=m["dims"]["hist_items"],
        hist_queries=m["dims"]["hist_queries"], model_version="swap-b", index_M=8, index_ef_construction=64,
    )
    return out


@pytest.mark.skipif(not hasattr(upper_fast, "Retriever"), reason="upper_fast.Retriever is not merged yet")
def test_search_while_bundle_hot_swapped(tmp_path: Path) -> None:
    """8 threads search while the bundle is swapped A <-> B every few ms: 0 errors, and every answer
    is exactly A's or exactly B's answer for that query (never a mix of the two)."""
    try:
        a = common.cached_bundle()
    except Exception as exc:  # noqa: BLE001 - the serving tests own bundle building
        pytest.skip(f"no tiny bundle can be built here: {type(exc).__name__}: {exc}")
    b = _sibling_bundle(a, tmp_path / "b")
    queries = ["red mug", "oak chair", "vintage ring gift", "wool lamp", "blue", "zzz unseen"]
    answers: dict[str, set[tuple]] = {q: set() for q in queries}
    for path in (a, b):
        r = upper_fast.Retriever.load(path)
        for q in queries:
            res = r.search(q, k=10)
            answers[q].add((r.manifest["model_version"], tuple(res.product_ids), tuple(np.round(res.scores, 5))))
    assert all(len(v) == 2 for v in answers.values()), "A and B must answer differently for the check to mean anything"
    allowed = {q: {(ids, sc) for _, ids, sc in v} for q, v in answers.items()}

    retriever = upper_fast.Retriever.load(a)
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = [0] * 8
    swaps = [0]

    def searcher(t: int) -> None:
        try:
            while not stop.is_set():
                q = queries[(t + counts[t]) % len(queries)]
                res = retriever.search(q, k=10)
                got = (tuple(res.product_ids), tuple(np.round(res.scores, 5)))
                assert got in allowed[q], f"answer for {q!r} matches neither bundle"
                counts[t] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    def swapper() -> None:
        try:
            while not stop.is_set():
                retriever.swap(b if swaps[0] % 2 == 0 else a)
                swaps[0] += 1
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(8)] + [threading.Thread(target=swapper)]
    rss0 = rss_bytes()
    for th in threads:
        th.start()
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    assert swaps[0] >= 2 and sum(counts) > 50, (swaps, counts)
    print(f"hot swap: 8 threads x 2.0 s, {sum(counts)} searches, {swaps[0]} swaps, 0 errors, "
          f"RSS {(rss_bytes() - rss0) / 2**20:+.1f} MiB")
