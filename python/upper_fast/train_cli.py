"""`upper-fast train DATA RUN`: train the UPPER model (needs the [train] extra at run time)."""

from __future__ import annotations

import argparse
import json
import sys


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the two-tower model on a dataset directory into a run directory",
        description="Train UPPER (two towers, multi-part hinge, three negative sources) on DATA; write RUN/. "
        "Under torchrun the same command trains data-parallel.",
    )
    p.add_argument("data", help="dataset directory or file (as `upper-fast generate` writes, or your own logs)")
    p.add_argument("run", help="output run directory")
    p.add_argument("--config", help="JSON file of TrainConfig fields (flags below override it)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--dim", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--device", help='"auto" (default: cuda when present), "cpu", "cuda"')
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint")
    p.add_argument("--no-personalization", action="store_true", help="ablation: no user history or country")
    p.add_argument("--text-encoder", help="path to a local Hugging Face encoder checkpoint (default: small T5)")
    p.add_argument("--freeze-text-encoder", action="store_true",
                   help="no gradient into the text encoder; its pooled output is computed once per product")
    p.add_argument("--no-pretrain", action="store_true", help="skip doc2query pre-training of the small T5")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from upper_fast.data import load_dataset

    try:
        from upper_fast_train import TrainConfig, train
    except ImportError as exc:
        raise ImportError(f"upper-fast train needs the training extra: pip install upper_fast[train] ({exc})") from exc

    values = json.loads(Path(args.config).read_text()) if args.config else {}
    flags = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "dim": args.dim,
        "seed": args.seed,
        "max_steps": args.max_steps,
        "device": args.device,
        "text_encoder": args.text_encoder,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.no_personalization:
        values["personalized"] = False
    if args.no_pretrain:
        values["pretrain"] = False
    if args.freeze_text_encoder:
        values["freeze_text_encoder"] = True
    if args.no_progress:
        values["progress"] = False
    config = TrainConfig.from_dict(values)
    dataset = load_dataset(args.data, progress=not args.no_progress)
    metrics = train(dataset, args.run, config, resume=args.resume, data_dir=args.data)
    label = " (simulated data)" if metrics.get("simulated") else ""
    last = metrics["last_loss"]
    print(
        f"trained{label}: {metrics['steps']} steps, {metrics['examples_per_s']:.0f} examples/s, "
        f"{metrics['seconds']:.1f} s, last loss {'-' if last is None else f'{last:.4f}'} -> {args.run}",
        file=sys.stderr,
    )
    return 0
