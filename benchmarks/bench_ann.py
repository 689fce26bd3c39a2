"""ANN benchmark: upper_fast.Index (f32 / bf16 / i8) against hnswlib and faiss-cpu HNSWFlat.

Data: the PEERS.md setup (/work/shared/peers/ann_peers.py): SIMULATED clustered unit vectors
(2000 clusters, noise 0.6), inner product, k = 100, M = 16, ef_construction = 200, build on 2
threads, search on 1 thread. n is scaled down from 200k (set UPPER_FAST_BENCH_N) for time on a shared
2-core machine. Every library builds in its own forked process (same data) so resident-memory
deltas are not polluted by the previous build.

    python benchmarks/bench_ann.py            # the summary table
    pytest benchmarks/bench_ann.py            # pytest-benchmark timings (smaller n)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
from typing import Any, Callable

import numpy as np

K = 100
M = 16
EFC = 200
DIM = 128
EFS = (50, 100, 150, 200, 300)


def clustered(n: int, nq: int, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The peers' generator: SIMULATED clustered unit vectors, data (n, dim) and queries (nq, dim).

    PEERS.md draws 200,000 vectors from 2000 clusters (100 per cluster, noise 0.6). Scaled-down runs
    keep 100 vectors per cluster (n // 100 clusters): with a fixed 2000 clusters a smaller n would
    leave ~10 per cluster and the top-100 would be mostly near-random tail, a different problem.
    """
    rng = np.random.default_rng(seed)
    clusters = max(1, n // 100)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)

    def sample(m: int) -> np.ndarray:
        x = centers[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    x = sample(n)
    return x, sample(nq)


def ground_truth(x: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    s = q @ x.T
    return np.argpartition(-s, k, axis=1)[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def heap_mb() -> float:
    """Bytes in use in glibc malloc (small blocks + mmapped ones), in MiB.

    Resident-set deltas undercount here: a forked child reuses pages the parent freed. Every library
    measured allocates through malloc/new, so this is the memory each index holds.
    """
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def machine() -> str:
    import upper_fast as uf

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {platform.python_version()}, upper_fast SIMD={uf.simd_level()}"


# ---- one library per forked process ----

def _latencies(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    lat = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat[i] = time.perf_counter() - t
    return float(np.percentile(lat, 50) * 1e6), float(np.percentile(lat, 99) * 1e6)


def _measure(name: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, n_single: int) -> dict[str, Any]:
    m0 = heap_mb()
    t = time.perf_counter()
    if name == "hnswlib f32":
        import hnswlib

        h = hnswlib.Index(space="ip", dim=x.shape[1])
        h.init_index(max_elements=len(x), M=M, ef_construction=EFC)
        h.set_num_threads(2)
        h.add_items(x)
        build = time.perf_counter() - t
        h.set_num_threads(1)

        def search(ef: int, qq: np.ndarray) -> np.ndarray:
            h.set_ef(ef)
            return h.knn_query(qq, k=K)[0]

        extra: dict[str, Any] = {}
    elif name == "faiss HNSWFlat":
        import faiss

        faiss.omp_set_num_threads(2)
        f = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        f.hnsw.efConstruction = EFC
        f.add(x)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)

        def search(ef: int, qq: np.ndarray) -> np.ndarray:
            f.hnsw.efSearch = ef
            return f.search(qq, K)[1]

        extra = {}
    else:
        import upper_fast as uf

        dtype = name.split()[-1]
        index = uf.Index(x.shape[1], dtype, M=M, ef_construction=EFC)  # type: ignore[arg-type]
        index.add(np.arange(len(x), dtype=np.int64), x, num_threads=2)
        build = time.perf_counter() - t

        def search(ef: int, qq: np.ndarray) -> np.ndarray:
            return index.search(qq, K, ef=ef).ids

        extra = {"memory_bytes": index.memory_bytes()}
    mem = heap_mb() - m0
    rows = []
    for ef in EFS:
        t = time.perf_counter()
        ids = search(ef, q)
        dt = time.perf_counter() - t
        p50, p99 = _latencies(lambda i, ef=ef: search(ef, q[i : i + 1]), n_single)
        rows.append({"ef": ef, "qps": len(q) / dt, "recall": recall(ids, truth), "p50_us": p50, "p99_us": p99})
    return {"name": name, "build_s": build, "mem_mb": mem, "rows": rows, **extra}


def _child(name: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, n_single: int, out: Any) -> None:
    out.put(_measure(name, x, q, truth, n_single))


def _print_result(r: dict[str, Any]) -> None:
    est = f"{r['memory_bytes'] / 2**20:.1f}" if "memory_bytes" in r else "-"
    for i, row in enumerate(r["rows"]):
        head = f"{r['name']:<17}{r['build_s']:>8.1f}{r['mem_mb']:>8.1f}{est:>8}" if i == 0 else " " * 41
        print(f"{head}{row['ef']:>5}{row['qps']:>8.0f}{row['recall']:>8.4f}{row['p50_us']:>8.0f}{row['p99_us']:>8.0f}",
              flush=True)


def run_all(
    n: int, nq: int, n_single: int = 300, report: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    x, q = clustered(n, nq)
    truth = ground_truth(x, q)
    ctx = mp.get_context("fork")
    results = []
    names = os.environ.get("UPPER_FAST_BENCH_LIBS", "hnswlib f32,faiss HNSWFlat,upper_fast f32,upper_fast bf16,upper_fast i8")
    for name in names.split(","):
        out = ctx.Queue()
        p = ctx.Process(target=_child, args=(name, x, q, truth, n_single, out))
        p.start()
        results.append(out.get())
        p.join()
        if report is not None:
            report(results[-1])
    return results


def call_overhead_us(reps: int = 20000) -> float:
    """Median cost of one Index.search call that has nothing to search (Python + binding overhead)."""
    import upper_fast as uf

    index = uf.Index(DIM)
    qv = np.ones(DIM, dtype=np.float32)
    lat = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter()
        index.search(qv, K)
        lat[i] = time.perf_counter() - t
    return float(np.median(lat) * 1e6)


def best_at(result: dict[str, Any], target: float) -> dict[str, Any] | None:
    """The fastest row with recall >= target."""
    ok = [r for r in result["rows"] if r["recall"] >= target]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def summary(n: int, nq: int) -> None:
    print(f"machine: {machine()}")
    print(f"data: SIMULATED clustered unit vectors (peers' generator, {n // 100} clusters of ~100), n={n} "
          f"(PEERS.md uses 200,000 in 2000 clusters), "
          f"dim={DIM}, {nq} queries, k={K}, M={M}, efC={EFC}; build 2 threads, search 1 thread")
    print(f"search call overhead (empty index, one query): {call_overhead_us():.2f} us")
    print(f"{'library':<17}{'build s':>8}{'heap MB':>8}{'est MB':>8}{'ef':>5}{'QPS':>8}{'R@100':>8}{'p50 us':>8}{'p99 us':>8}")
    results = run_all(n, nq, report=_print_result)
    base = results[0]
    ref = best_at(base, 0.99)
    print("\nat recall@100 >= 0.99 (fastest ef reaching it), ratios vs hnswlib f32:")
    for r in results:
        b = best_at(r, 0.99)
        if b is None or ref is None:
            print(f"  {r['name']:<17} does not reach 0.99 at ef <= {EFS[-1]}")
            continue
        print(f"  {r['name']:<17} ef={b['ef']:<4} QPS {b['qps']:.0f} ({b['qps'] / ref['qps']:.2f}x), "
              f"memory {r['mem_mb']:.1f} MB ({r['mem_mb'] / base['mem_mb']:.2f}x), "
              f"p50 {b['p50_us']:.0f} us, build {r['build_s'] / base['build_s']:.2f}x")


# ---- pytest-benchmark ----

def _small() -> tuple[np.ndarray, np.ndarray]:
    return clustered(int(os.environ.get("UPPER_FAST_BENCH_PYTEST_N", "20000")), 200)


def test_bench_single_query(benchmark: Any) -> None:
    import upper_fast as uf

    x, q = _small()
    index = uf.Index(DIM, "i8", M=M, ef_construction=EFC)
    index.add(np.arange(len(x), dtype=np.int64), x, num_threads=2)
    benchmark(lambda: index.search(q[0], K, ef=150))


def test_bench_batch_query(benchmark: Any) -> None:
    import upper_fast as uf

    x, q = _small()
    index = uf.Index(DIM, "i8", M=M, ef_construction=EFC)
    index.add(np.arange(len(x), dtype=np.int64), x, num_threads=2)
    benchmark(lambda: index.search(q, K, ef=150))


def test_bench_hnswlib_single_query(benchmark: Any) -> None:
    import hnswlib

    x, q = _small()
    h = hnswlib.Index(space="ip", dim=DIM)
    h.init_index(max_elements=len(x), M=M, ef_construction=EFC)
    h.set_num_threads(2)
    h.add_items(x)
    h.set_num_threads(1)
    h.set_ef(150)
    benchmark(lambda: h.knn_query(q[:1], k=K))


if __name__ == "__main__":
    summary(int(os.environ.get("UPPER_FAST_BENCH_N", "50000")), int(os.environ.get("UPPER_FAST_BENCH_NQ", "1000")))
