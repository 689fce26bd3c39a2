"""The `upper-fast` command line.

Each area contributes its subcommands through a module with `add_commands(subparsers)`; the handler
of a subcommand is stored as `func` on its parser and receives the parsed namespace.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Areas that add subcommands, in help order.
_COMMAND_MODULES = (
    "upper_fast.data.cli",       # generate, validate
    "upper_fast.train_cli",      # train (needs the [train] extra at run time)
    "upper_fast.eval_cli",       # eval (needs the [train] extra at run time)
    "upper_fast.serve_cli",      # export, search, info, demo
    "upper_fast.recommend_cli",  # train-interactions, export-interactions, recommend
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="upper-fast", description=__doc__.splitlines()[0])
    from upper_fast import __version__

    parser.add_argument("--version", action="version", version=f"upper-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_commands(sub)
    return parser


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
