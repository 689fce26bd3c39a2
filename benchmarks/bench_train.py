"""Training throughput on the simulated marketplace, with where a step's time goes.

    PYTHONPATH=python:training python benchmarks/bench_train.py [--steps 30] [--data DIR] [--threads 2]

Generates the default simulated world (unless --data is given), prepares the run (tokenizer, graph
embeddings; pre-training is skipped: it does not change the step cost), then trains --steps optimizer
steps past warm-up so all three negative sources are active, and prints per-phase medians and p99
(data gathering, dynamic-negative mining incl. pool refreshes, forward, backward, optimizer) and the
examples/s. Every figure printed is from this run on this machine; the data are simulated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset directory (default: generate the default simulated world)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = parser.parse_args()

    import torch

    import upper_fast
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate
    from upper_fast_train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data = Path(args.data) if args.data else tmp / "world"
    if not args.data:
        generate(data, progress=False)
    dataset = load_dataset(data)
    # warmup_fraction=0 so every timed step runs all three negative sources at their final weights.
    config = TrainConfig.from_flat(max_steps=args.steps, batch_size=args.batch_size, pretrain=False, warmup_fraction=0.0, progress=False)
    t0 = time.perf_counter()
    metrics = train(dataset, tmp / "run", config)
    total = time.perf_counter() - t0

    hist = metrics["loss_history"]
    print(f"simulated marketplace: {dataset.catalog.num_rows} products, {metrics['n_examples']} training examples")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}; "
          f"SIMD {upper_fast.simd_level()}; torch {torch.__version__}, {torch.get_num_threads()} threads; device {metrics['device']}")
    print(f"config: batch {config.loop.batch_size}, dim {config.model.dim}, inbatch {config.negatives.inbatch_negatives}, uniform {config.negatives.uniform_negatives}, "
          f"dynamic {config.negatives.dynamic_negatives} from a pool of {config.negatives.dynamic_pool} refreshed every {config.negatives.dynamic_refresh} steps")
    print(f"{'phase':<10} {'median ms':>10} {'p99 ms':>10} {'share':>7}")
    step_total = np.zeros(len(hist))
    for phase in ("data", "mining", "forward", "backward", "optimizer"):
        v = np.array([h[f"{phase}_s"] for h in hist]) * 1e3
        step_total += v
    for phase in ("data", "mining", "forward", "backward", "optimizer"):
        v = np.array([h[f"{phase}_s"] for h in hist]) * 1e3
        print(f"{phase:<10} {np.median(v):>10.1f} {np.percentile(v, 99):>10.1f} {v.sum() / step_total.sum():>6.1%}")
    print(f"{'step':<10} {np.median(step_total):>10.1f} {np.percentile(step_total, 99):>10.1f}")
    print(f"examples/s: {metrics['examples_per_s']:.0f} over {metrics['steps_this_run']} steps; "
          f"preparation (tokenizer {metrics.get('tokenizer_s', 0):.1f} s, graph {metrics.get('graph_s', 0):.1f} s, "
          f"featurize {metrics['featurize_s']:.1f} s); wall {total:.1f} s")
    print(json.dumps({"examples_per_s": metrics["examples_per_s"], "step_time_s": metrics["step_time_s"]}))


if __name__ == "__main__":
    main()
