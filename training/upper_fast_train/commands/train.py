"""`upper-fast train DATA RUN`: train the UPPER model (needs the [train] extra at run time)."""

from __future__ import annotations

import argparse
import json
import sys

from upper_fast.data.windows import add_window_arguments, window_arguments


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the two-tower model on a dataset directory into a run directory",
        description="Train UPPER (two towers, multi-part hinge, three negative sources) on DATA; write RUN/. "
        "Under torchrun the same command trains data-parallel.",
    )
    p.add_argument("data", help="dataset directory or file (as `upper-fast generate` writes, or your own logs)")
    p.add_argument("run", help="output run directory")
    p.add_argument("--preset", help="named configuration: logs (search logs with users), relevance (judged, signed-out "
                   "data), paper (UPPER as published), tiny (tests); default: chosen from the data")
    p.add_argument("--config", help="JSON file of overrides on the preset: sections ({\"loop\": {\"epochs\": 3}}) or "
                   "field names ({\"epochs\": 3}); the flags below override it")
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
    add_window_arguments(p)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from upper_fast.data import load_dataset

    try:
        from upper_fast_train import TrainConfig, train
    except ImportError as exc:
        raise ImportError(f"upper-fast train needs the training extra: pip install upper-fast-train ({exc})") from exc

    from upper_fast_train.config import preset_for_dataset, resolve_text_encoder

    given = json.loads(Path(args.config).read_text()) if args.config else {}
    if not isinstance(given, dict):
        raise ValueError(f"{args.config} must hold a JSON object: config overrides, or a whole config")
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
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.no_personalization:
        flags["personalized"] = False
    if args.no_pretrain:
        flags["pretrain"] = False
    if args.freeze_text_encoder:
        flags["freeze_text_encoder"] = True
    if args.no_progress:
        flags["progress"] = False

    def configure(preset: str | None) -> TrainConfig:
        if "schema_version" in given:  # a whole config, e.g. another run's config.json
            if args.preset:
                raise ValueError(f"{args.config} is a whole config (it has schema_version): drop --preset, or keep "
                                 "only the fields to change in the file")
            config = TrainConfig.from_dict(given).replace(**flags)
        else:
            config = TrainConfig.preset(preset or "logs", **given).replace(**flags)
        resolve_text_encoder(config.text.text_encoder)
        return config

    from_data = not args.preset and "schema_version" not in given
    if not from_data:  # a bad preset, field or encoder path fails before the data is read
        config = configure(args.preset)
    dataset = load_dataset(args.data, progress=not args.no_progress, **window_arguments(args))
    if dataset.windows is not None:
        print(f"windows: {dataset.windows.describe()}; the model learns from the train window only",
              file=sys.stderr)
    if from_data:
        name, why = preset_for_dataset(dataset)
        config = configure(name)
        print(f"preset {name!r} ({why}); choose another with --preset logs|relevance|paper|tiny",
              file=sys.stderr)
    metrics = train(dataset, args.run, config, resume=args.resume, data_dir=args.data)
    label = " (simulated data)" if metrics.get("simulated") else ""
    last = metrics["last_loss"]
    print(
        f"trained{label}: {metrics['steps']} steps, {metrics['examples_per_s']:.0f} examples/s, "
        f"last loss {'-' if last is None else f'{last:.4f}'} -> {args.run}\n"
        f"  {metrics.get('total_s', metrics['seconds']):.0f} s in all: {_time_split(metrics)}",
        file=sys.stderr,
    )
    return 0


def _time_split(metrics: dict) -> str:
    """Where a run's time went, from its metrics (parts a resumed run skipped are absent)."""
    parts = [("tokenizer", metrics.get("tokenizer_s")), ("graph", metrics.get("graph_s")),
             ("doc2query", (metrics.get("pretrain") or {}).get("seconds")), ("featurize", metrics.get("featurize_s")),
             ("text encoding", metrics.get("text_encode_s")), ("teacher", metrics.get("teacher_s")),
             ("loop", metrics.get("seconds"))]
    out = ", ".join(f"{name} {value:.0f} s" for name, value in parts if value)
    if metrics.get("text_encode_s") or metrics.get("teacher_s"):
        out += f" (frozen text encoder in {metrics.get('frozen_encode_dtype', 'float32')})"
    return out
