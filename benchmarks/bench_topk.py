"""Batched top-k by inner product (hard-negative mining): upper_fast vs torch and numpy.

Simulated data: standard-normal queries and candidates (random, not a trained model).
Default shape is the issue's: 256 queries x 200,000 candidates, dim 128, k = 32, ONE thread for
every method (torch.set_num_threads(1); numpy's BLAS limited through threadpoolctl when present).

    python -m pytest benchmarks/bench_topk.py --benchmark-enable   # pytest-benchmark + summary
    python benchmarks/bench_topk.py [--rounds 5] [--candidates 200000]   # plain summary

Both print the machine, the SIMD level, the thread count, median and p99 per method, and our speed-up
over each peer from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import upper_fast

M, N, D, K = 256, 200_000, 128, 32
ROUNDS = 5
SEED = 0


def make_data(m: int = M, n: int = N, d: int = D) -> dict[str, np.ndarray]:
    """Simulated f32 data and its bf16 (uint16, round-to-nearest-even) copy."""
    rng = np.random.default_rng(SEED)
    q = rng.standard_normal((m, d), dtype=np.float32)
    c = rng.standard_normal((n, d), dtype=np.float32)
    return {"q": q, "c": c, "q_bf16": to_bf16(q), "c_bf16": to_bf16(c)}


def to_bf16(x: np.ndarray) -> np.ndarray:
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[str]:
    """Limits numpy's BLAS to one thread when threadpoolctl is installed; yields a description."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "numpy BLAS threads: library default (install threadpoolctl to pin 1)"
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield "numpy BLAS threads: 1 (threadpoolctl)"


def methods(data: dict[str, np.ndarray], k: int = K) -> dict[str, Callable[[], object]]:
    """name -> zero-argument callable computing the top-k ids+scores for all queries."""
    out: dict[str, Callable[[], object]] = {
        "upper_fast f32": lambda: upper_fast.topk_inner_product(data["q"], data["c"], k, num_threads=1),
        "upper_fast bf16": lambda: upper_fast.topk_inner_product(data["q_bf16"], data["c_bf16"], k, num_threads=1),
        "upper_fast f32 q x bf16 c": lambda: upper_fast.topk_inner_product(data["q"], data["c_bf16"], k, num_threads=1),
    }

    def numpy_topk() -> object:
        s = data["q"] @ data["c"].T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1)

    out["numpy f32 matmul+argpartition"] = numpy_topk
    try:
        import torch
    except ImportError:
        return out
    torch.set_num_threads(1)
    tq, tc = torch.from_numpy(data["q"]), torch.from_numpy(data["c"])
    bq, bc = tq.to(torch.bfloat16), tc.to(torch.bfloat16)
    out["torch f32 topk(q @ P.T)"] = lambda: torch.topk(tq @ tc.T, k, dim=1)
    out["torch bf16 topk(q @ P.T)"] = lambda: torch.topk(bq @ bc.T, k, dim=1)
    return out


def header() -> list[str]:
    try:
        import torch

        torch_line = f"torch {torch.__version__}, torch threads {torch.get_num_threads()}"
    except ImportError:
        torch_line = "torch not installed (peers skipped)"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return [
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"upper_fast {upper_fast.__version__}: SIMD level {upper_fast.simd_level()} "
        f"(CPU best {upper_fast.cpu_simd_level()}), upper_fast threads 1; {torch_line}",
        f"data: SIMULATED standard-normal, {M} queries x {N:,} candidates, dim {D}, k = {K}",
    ]


def summary(times: dict[str, list[float]]) -> list[str]:
    """Median / p99 per method (ms) and the ratios peer / ours (> 1 means we are faster)."""
    lines = [f"{'method':34s} {'median ms':>10s} {'p99 ms':>9s} {'rounds':>6s}"]
    med = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in times.items():
        lines.append(f"{name:34s} {1e3 * med[name]:10.1f} {1e3 * np.percentile(t, 99):9.1f} {len(t):6d}")
    flops = 2.0 * M * N * D
    for name in ("upper_fast f32", "upper_fast bf16"):
        if name in med:
            lines.append(f"{name}: {flops / med[name] / 1e9:.1f} effective GFLOP/s")
    pairs = [("torch f32 topk(q @ P.T)", "upper_fast f32"), ("torch bf16 topk(q @ P.T)", "upper_fast bf16"),
             ("torch f32 topk(q @ P.T)", "upper_fast bf16"), ("numpy f32 matmul+argpartition", "upper_fast f32")]
    for peer, ours in pairs:
        if peer in med and ours in med:
            lines.append(f"speed-up {ours} vs {peer}: {med[peer] / med[ours]:.2f}x")
    return lines


# ----------------------------------------------------------------------------- pytest-benchmark

_TIMES: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not _TIMES:
        return
    # Printed outside pytest's output capture so the summary shows without -s.
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        with one_blas_thread() as blas:
            pass
        print()
        for line in header() + [blas] + summary(_TIMES):
            print(line)


@pytest.mark.parametrize(
    "name",
    ["upper_fast f32", "upper_fast bf16", "upper_fast f32 q x bf16 c", "torch f32 topk(q @ P.T)",
     "torch bf16 topk(q @ P.T)", "numpy f32 matmul+argpartition"],
)
def test_topk(benchmark, data: dict[str, np.ndarray], name: str) -> None:
    fns = methods(data)
    if name not in fns:
        pytest.skip("torch is not installed (pip install upper-fast-train)")
    with one_blas_thread():
        benchmark.pedantic(fns[name], rounds=ROUNDS if "bf16 topk" not in name else 2, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:
        _TIMES[name] = list(benchmark.stats.stats.data)


# ----------------------------------------------------------------------------- plain script


def main() -> None:
    global M, N
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--candidates", type=int, default=N)
    parser.add_argument("--queries", type=int, default=M)
    parser.add_argument("--skip-slow", action="store_true", help="skip torch bf16 (slow without AVX-512 BF16)")
    args = parser.parse_args()
    M, N = args.queries, args.candidates
    data = make_data(M, N)
    fns = {name: fn for name, fn in methods(data).items()
           if not (args.skip_slow and name == "torch bf16 topk(q @ P.T)")}
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    # Rounds are interleaved (every method once per round) so that load from other processes on a
    # shared machine hits all methods alike and the ratios stay comparable.
    with one_blas_thread() as blas:
        for fn in fns.values():
            fn()  # warm-up
        for r in range(args.rounds):
            for name, fn in fns.items():
                if name == "torch bf16 topk(q @ P.T)" and r >= max(2, args.rounds // 2):
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    for line in header() + [blas, "wall-clock:"] + summary(times):
        print(line)
    # Every method runs on one thread, so process CPU time is its cost without the waiting that
    # other processes on a shared machine add to the wall clock.
    for line in ["process CPU time (all methods single-threaded):"] + summary(cpu):
        print(line)


if __name__ == "__main__":
    main()
