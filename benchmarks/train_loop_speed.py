"""Speed of the training loop alone (steps/s and the step's split), on a prepared run directory.

    python benchmarks/train_loop_speed.py DATA PREP [--preset logs] [--steps 60] [--warmup-fraction 0]
        [--threads 2] [--profile 20] [--set KEY=VALUE ...] [--out result.json]

PREP is a run directory that `upper-fast train DATA PREP` (or benchmarks/train_time.py) prepared:
tokenizer.json, vocab.json, graph.npz, text_encoder/, checkpoint/encoder_init.safetensors and, for a
frozen text encoder, text_cache/ (the pooled product titles and teacher queries are read from it, or
encoded and written there on the first call). Nothing in PREP is changed besides text_cache/.

Builds the preset's model with its seed and runs `train_model` for --steps optimizer steps, then
prints steps/s, examples/s, the mean milliseconds per phase (data, mining, forward, backward,
optimizer), the load average before and after (the step time depends on what else runs), and writes
the per-step losses to --out, so two versions of the code can be compared step by step. The preset's
warm-up (uniform negatives only) covers the first steps of a run; --warmup-fraction 0 makes every
step after the first score in-batch and mined negatives too, as 80% of a full run's steps do.
--profile K: a torch.profiler table of K more steps after the timed ones.
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
    parser.add_argument("prep", type=Path, help="a prepared run directory (see the module docstring)")
    parser.add_argument("--preset", default="logs")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-fraction", type=float, default=None, help="override negatives.warmup_fraction")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--profile", type=int, default=0, help="profile this many more steps with torch.profiler")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="a config override on top of the preset, e.g. --set objective.distill_rows=all "
                        "(repeatable; the value is JSON, a bare word is taken as a string)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for name in ("tokenizer.json", "vocab.json", "graph.npz", "text_encoder"):
        if not (args.prep / name).exists():
            raise SystemExit(f"{args.prep} has no {name}: prepare it first with `upper-fast train {args.data} {args.prep}`")

    import torch
    from safetensors.torch import load_file

    import upper_fast
    from upper_fast.data import load_dataset
    from upper_fast_train import TrainConfig
    from upper_fast_train.distributed import seed_all
    from upper_fast_train.loop import train_model
    from upper_fast_train.prepare import build_model, training_arrays
    from upper_fast_train.towers import text_encoder_from_dir

    torch.set_num_threads(args.threads)
    overrides: dict = {"progress": False, "text_cache_dir": str((args.prep / "text_cache").resolve())}
    if args.warmup_fraction is not None:
        overrides["warmup_fraction"] = args.warmup_fraction
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    config = TrainConfig.preset(args.preset, **overrides)
    dataset = load_dataset(args.data, progress=False)
    arrays = training_arrays(dataset, args.prep, config)

    def fresh_model() -> torch.nn.Module:
        seed_all(config.loop.seed)
        model = build_model(config, arrays.tokenizer.get_vocab_size(), arrays.vocab, text_encoder_from_dir(args.prep / "text_encoder"))
        init = args.prep / "checkpoint" / "encoder_init.safetensors"
        if init.exists():
            model.product_tower.text_encoder.load_state_dict(load_file(str(init)))
        return model

    load_before = os.getloadavg()
    metrics = train_model(fresh_model(), arrays.data, arrays.products, config.replace(max_steps=args.steps))
    load_after = os.getloadavg()
    steps = metrics["steps_this_run"]
    report = {
        "data": str(args.data), "simulated": bool(dataset.meta.get("simulated")), "preset": args.preset, "set": args.set,
        "warmup_fraction": config.negatives.warmup_fraction, "threads": args.threads,
        "machine": f"{cpu_model()}, {os.cpu_count()} cpus, {platform.machine()}", "simd": upper_fast.simd_level(),
        "torch": torch.__version__, "steps": steps, "batch_size": config.loop.batch_size,
        "loop_s": metrics["seconds"], "steps_per_s": steps / metrics["seconds"], "examples_per_s": metrics["examples_per_s"],
        "text_encode_s": metrics["text_encode_s"], "teacher_s": metrics["teacher_s"],
        "step_ms": {k: 1000 * v for k, v in metrics["step_time_s"].items()},
        "loadavg_before": load_before, "loadavg_after": load_after,
        "losses": [h["loss"] for h in metrics["loss_history"]] if steps <= 200 else None,
    }
    print(f"machine: {report['machine']}; SIMD {report['simd']}; torch {report['torch']} x{args.threads} threads")
    print(f"{steps} steps of {config.loop.batch_size} (preset {args.preset}, warmup_fraction "
          f"{config.negatives.warmup_fraction}): {report['steps_per_s']:.2f} steps/s, {report['examples_per_s']:.0f} examples/s")
    print("  ms per step: " + ", ".join(f"{k} {v:.1f}" for k, v in report["step_ms"].items()))
    print(f"  load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_model(fresh_model(), arrays.data, arrays.products, config.replace(max_steps=args.profile))
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        print(table)
        report["profile_steps"] = args.profile
        report["profile"] = table
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
