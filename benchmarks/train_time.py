"""End-to-end training time of a preset on a realistic log, and where it goes.

    python benchmarks/train_time.py DATA RUN [--preset logs] [--threads 2] [--out result.json]

DATA is a dataset directory, e.g. the semi-real Home Depot log of 1M rows:
`python benchmarks/semireal_homedepot.py --out /tmp/semireal1m --rows 1000000`. Runs `upper_fast_train.train`
as `upper-fast train DATA RUN --preset PRESET` does (after `load_dataset`, which is timed apart),
then prints and writes the wall time and its split from RUN/metrics.json: tokenizer, graph embeddings,
doc2query pre-training, featurizing, the frozen encoder's product texts, the distillation teacher's
queries, and the training loop (examples/s). Prints the machine and SIMD level with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _machine import cpu_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--preset", default="logs")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--frozen-encode-dtype", choices=["auto", "float32", "bfloat16"],
                        help="override the preset's text.frozen_encode_dtype")
    args = parser.parse_args(argv)

    import torch

    import upper_fast
    from upper_fast.data import load_dataset
    from upper_fast_train import TrainConfig, train
    from upper_fast_train.encode import frozen_encode_dtype

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    dataset = load_dataset(args.data, progress=False)
    load_s = time.perf_counter() - t0
    overrides = {"frozen_encode_dtype": args.frozen_encode_dtype} if args.frozen_encode_dtype else {}
    config = TrainConfig.preset(args.preset, progress=False, graph_workers=args.threads, **overrides)
    t0 = time.perf_counter()
    metrics = train(dataset, args.run, config, data_dir=args.data)
    wall = time.perf_counter() - t0
    split = {
        "load_dataset_s": load_s,
        "tokenizer_s": metrics.get("tokenizer_s"),
        "graph_s": metrics.get("graph_s"),
        "doc2query_s": (metrics.get("pretrain") or {}).get("seconds"),
        "featurize_s": metrics.get("featurize_s"),
        "text_encode_s": metrics.get("text_encode_s"),
        "teacher_s": metrics.get("teacher_s"),
        "loop_s": metrics.get("seconds"),
    }
    report = {
        "data": str(args.data), "simulated": bool(dataset.meta.get("simulated")), "log_rows": dataset.log.num_rows,
        "products": dataset.catalog.num_rows, "preset": args.preset, "threads": args.threads,
        "machine": f"{cpu_model()}, {os.cpu_count()} cpus, {platform.machine()}",
        "simd": upper_fast.simd_level(), "torch": torch.__version__,
        "train_wall_s": wall, "end_to_end_s": wall + load_s, "split": split, "steps": metrics["steps"],
        "n_examples": metrics["n_examples"], "examples_per_s": metrics["examples_per_s"],
        "step_time_s": metrics.get("step_time_s"),
        "frozen_encode_dtype": str(frozen_encode_dtype(config.text.frozen_encode_dtype, torch.device("cpu"))).removeprefix("torch."),
    }
    print(f"machine: {report['machine']}; SIMD {report['simd']}; torch {report['torch']} x{args.threads} threads; "
          f"frozen text encoder in {report['frozen_encode_dtype']}")
    print(f"{report['log_rows']:,} log rows, {report['products']:,} products, preset {args.preset}: "
          f"{report['end_to_end_s'] / 60:.1f} min end to end")
    for name, value in split.items():
        if value:
            print(f"  {name:<16} {value:8.1f} s")
    print(f"  {metrics['n_examples']:,} examples, {metrics['steps']} steps, {metrics['examples_per_s']:.0f} examples/s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
