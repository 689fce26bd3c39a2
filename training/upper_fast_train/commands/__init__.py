"""The training package's `upper-fast` subcommands, found by the serving CLI through the
`upper_fast.commands` entry point (training/pyproject.toml).

Registering them imports no torch: each handler imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["COMMANDS", "add_commands"]

# Modules in help order, and the commands each adds.
_MODULES = (
    ("upper_fast_train.commands.generate", ("generate",)),
    ("upper_fast_train.commands.train", ("train",)),
    ("upper_fast_train.commands.evaluate", ("eval",)),
    ("upper_fast_train.commands.export", ("export", "demo")),
    ("upper_fast_train.commands.interactions", ("train-interactions", "export-interactions")),
)
COMMANDS = tuple(name for _, names in _MODULES for name in names)


def add_commands(subparsers: Any) -> None:
    for module, _ in _MODULES:
        importlib.import_module(module).add_commands(subparsers)
