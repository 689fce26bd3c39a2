"""The `upper-fast` command line.

Each area contributes its subcommands through a module with `add_commands(subparsers)`; the handler
of a subcommand is stored as `func` on its parser and receives the parsed namespace. The serving
package adds `validate`, `search`, `info` and `recommend`; the training package (the separate
`upper-fast-train` distribution) adds `generate`, `train`, `eval`, `export`, `demo`,
`train-interactions` and `export-interactions` through the `upper_fast.commands` entry point. Without
it, those commands are still listed and say how to install them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points
from typing import Any

# Serving areas that add subcommands, in help order.
_COMMAND_MODULES = (
    "upper_fast.data.cli",       # validate
    "upper_fast.serve_cli",      # search, info
    "upper_fast.recommend_cli",  # recommend
)
# Entry-point group through which other installed packages add subcommands.
PLUGIN_GROUP = "upper_fast.commands"
# The training package's commands, listed even when it is not installed.
TRAINING_COMMANDS = ("generate", "train", "eval", "export", "demo", "train-interactions", "export-interactions")
TRAINING_INSTALL = ("pip install upper-fast-train (from a source checkout: pip install torch==2.13.0 ./training); "
                    "the serving package alone has validate, search, info and recommend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="upper-fast", description=__doc__.splitlines()[0])
    from upper_fast import __version__

    parser.add_argument("--version", action="version", version=f"upper-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()(sub)
    for name in TRAINING_COMMANDS:
        if name not in sub.choices:
            _missing_command(sub, name)
    return parser


def _missing_command(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="(needs the training package: pip install upper-fast-train)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_needs_training)


def _needs_training(args: argparse.Namespace) -> int:
    raise ImportError(f"`upper-fast {args.command}` is part of the training package, which is not installed: "
                      f"{TRAINING_INSTALL}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        # User mistakes and unusable files: one clear line, no traceback.
        print(f"upper-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
