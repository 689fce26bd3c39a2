"""Personalisation gain on the simulated marketplace over several seeds: a preset trained with user
features against the same preset trained without them (the non-personalised ablation).

    python benchmarks/personalization_seeds.py [--preset logs] [--seeds 0 1 2] [--work DIR] [--out result.json]
        [--set section.field=JSON ...] [--variant-set section.field=JSON ...] [--skip-ablation]
        [--variant-name NAME] [--reuse]

Each seed generates its own simulated marketplace (`upper_fast_train.simulate.generate`, default sizes), trains
the preset twice (personalized true / false, same seed otherwise) and scores purchase recall@100 on
the later window (`upper_fast_train.evaluate.evaluate_run`). Prints and writes the per-seed figures,
the relative gain, and its mean and spread. `--set` overrides the preset for every run;
`--variant-set` also trains a personalised variant with those overrides on top, scored beside the
preset (its gain is over the same ablation); "{seed}" in a string value becomes the seed (a per-seed
path). `--reuse` scores runs already complete in WORK instead of training them again. All figures
are on SIMULATED data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="logs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("personalization_seeds"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="preset overrides for every run")
    parser.add_argument("--variant-set", nargs="*", default=[], metavar="KEY=JSON",
                        help="overrides of a personalised variant trained beside the preset")
    parser.add_argument("--skip-ablation", action="store_true", help="no non-personalised run (no gains)")
    parser.add_argument("--variant-name", default="variant", help="run directory prefix of the variant (WORK/NAME<seed>)")
    parser.add_argument("--reuse", action="store_true",
                        help="score runs already complete in WORK (model.safetensors written) instead of training them again")
    args = parser.parse_args(argv)
    common, variant = _overrides(args.set), _overrides(args.variant_set)

    import torch

    import upper_fast
    from upper_fast.data import load_dataset
    from upper_fast_train.simulate import generate
    from upper_fast_train import TrainConfig, load_run, train
    from upper_fast_train.evaluate import evaluate_run

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        world = args.work / f"world{seed}"
        if not (world / "dataset.json").exists():
            generate(world, seed=seed, progress=False)
        dataset = load_dataset(world, progress=False)
        row: dict[str, Any] = {"seed": seed}
        runs = [("personalized", {"personalized": True})]
        if variant:
            runs.append(("variant", {"personalized": True, **{k: _for_seed(v, seed) for k, v in variant.items()}}))
        if not args.skip_ablation:
            runs.append(("ablation", {"personalized": False}))
        for name, extra in runs:
            run = args.work / f"{args.variant_name if name == 'variant' else name}{seed}"
            if not (args.reuse and (run / "model.safetensors").exists()):
                t0 = time.perf_counter()
                train(dataset, run, TrainConfig.preset(args.preset, seed=seed, progress=False, **common, **extra))
                row[f"{name}_train_s"] = time.perf_counter() - t0
            result = evaluate_run(load_run(run, dataset), dataset, ks=(100,), progress=False)
            row[name] = result["purchase_recall@100"]
            row[f"{name}_unseen"] = result.get("purchase_recall@100/unseen")
            print(json.dumps({"seed": seed, name: row[name]}), flush=True)
        if args.skip_ablation:
            rows.append(row)
            continue
        row["gain"] = row["personalized"] / row["ablation"] - 1.0
        if variant:
            row["variant_gain"] = row["variant"] / row["ablation"] - 1.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    gains = np.array([r.get("gain", np.nan) for r in rows])
    report = {
        "data": "simulated", "preset": args.preset, "set": common, "variant_set": variant, "seeds": rows,
        "gain_mean": float(gains.mean()), "gain_min": float(gains.min()), "gain_max": float(gains.max()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, SIMD {upper_fast.simd_level()}, "
                   f"torch {torch.__version__} x{args.threads} threads",
    }
    print(f"SIMULATED marketplace, preset {args.preset}: personalised vs non-personalised purchase recall@100, "
          f"gain {gains.mean():+.1%} (min {gains.min():+.1%}, max {gains.max():+.1%}) over seeds {args.seeds}")
    if variant:
        vg = np.array([r.get("variant_gain", np.nan) for r in rows])
        report.update(variant_gain_mean=float(vg.mean()), variant_gain_min=float(vg.min()), variant_gain_max=float(vg.max()))
        print(f"  variant {variant}: gain {vg.mean():+.1%} (min {vg.min():+.1%}, max {vg.max():+.1%}); personalised "
              f"recall@100 preset {np.mean([r['personalized'] for r in rows]):.4f} vs variant "
              f"{np.mean([r['variant'] for r in rows]):.4f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


def _for_seed(value: Any, seed: int) -> Any:
    """A string override with "{seed}" in it, formatted for this seed (a per-seed path); others as they are."""
    return value.replace("{seed}", str(seed)) if isinstance(value, str) else value


def _overrides(items: list[str]) -> dict[str, Any]:
    """["objective.distill_rows=\"without_history\"", "loop.epochs=1"] -> {key: value}; a value that
    is not JSON is taken as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set / --variant-set take KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
