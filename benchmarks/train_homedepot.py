"""Train UPPER on Home Depot train judgments and score it on Home Depot dev (docs/evaluation.md,
"Our model on Home Depot dev").

    python benchmarks/train_homedepot.py RUN_DIR [--preset relevance] [--config JSON]
        [--prep-from OTHER_RUN] [--graded] [--data ../shared/data] [--out result.json]

Home Depot has no users: every judgment is a signed-out event (relevance >= 2.5 purchase, >= 2.0
click, else impression; `upper_fast_train.realdata.load_homedepot`; with --graded every judgment
with a positive nDCG gain is an engagement: >= 2.5 purchase, >= 2.0 add_to_cart, >= 1.5 favorite,
> 1.0 click). Dev queries never occur in
train, so the dev query tower sees only its term bag (no graph node, no history).

--preset names the starting config (default relevance, the preset for judged signed-out data);
--config is a JSON object of overrides on it (field names or sections). The relevance preset adds
title pseudo-queries (upper_fast_train.pseudo_queries): the 7,103 training queries alone leave most
of the term table untrained.
--prep-from reuses another run's preparation (tokenizer, vocab.json, graph.npz, text_encoder/,
checkpoint/encoder_init.safetensors; graph embeddings take minutes): it must have been made with
the same text encoder, graph_dim and tokenizer settings.
The real data is read in place and never copied. Prints and writes (--out) the dev metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def copy_preparation(src: Path, dst: Path) -> None:
    """Lay out `dst` with `src`'s preparation so `train(..., resume=True)` skips it (no checkpoint state)."""
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "checkpoint").mkdir(parents=True)
    for name in ("graph.npz", "tokenizer.json", "vocab.json"):
        shutil.copyfile(src / name, dst / name)
    shutil.copytree(src / "text_encoder", dst / "text_encoder")
    init = src / "checkpoint" / "encoder_init.safetensors"
    if init.exists():
        shutil.copyfile(init, dst / "checkpoint" / init.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--preset", default="relevance", help="starting config (upper_fast_train presets)")
    parser.add_argument("--config", default="{}", help="JSON object of overrides: field names or sections")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--prep-from", type=Path)
    parser.add_argument("--graded", action="store_true", help="train judgments on all four engagement types")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from upper_fast_train.realdata import load_homedepot
    from upper_fast_train import TrainConfig, load_run, train
    from upper_fast_train.evaluate import Judgments, evaluate_judged, run_query_encoder

    values = json.loads(args.config)
    config = TrainConfig.preset(args.preset, **values)
    if config.loop.device in ("auto", "cpu"):
        torch.set_num_threads(args.threads)
    dataset = load_homedepot(args.data, "train", graded=args.graded).dataset
    resume = False
    if args.prep_from:
        copy_preparation(args.prep_from, args.run)
        resume = True
    t0 = time.perf_counter()
    metrics = train(dataset, args.run, config, resume=resume)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    dev, table = load_homedepot(args.data, "dev")
    judged = Judgments.from_table(table, dev.catalog.column("product_id"))
    run = load_run(args.run)
    products = np.ascontiguousarray(run.encode_products(dev.catalog), dtype=np.float32)
    result = evaluate_judged(run_query_encoder(run), products, judged)
    report = {
        "preset": args.preset, "overrides": values, "config": config.to_dict(),
        "prep_from": str(args.prep_from) if args.prep_from else None, "graded": args.graded, "steps": metrics["steps"],
        "n_examples": metrics["n_examples"], "train_wall_s": train_s, "loop_s": metrics["seconds"],
        "eval_wall_s": time.perf_counter() - t0, "first_loss": metrics["first_loss"], "last_loss": metrics["last_loss"],
        "examples_per_s": metrics.get("examples_per_s"), "step_time_s": metrics.get("step_time_s"), "dev": result,
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
