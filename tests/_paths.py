"""Where the package under test lives, for tests that start child processes.

Children must import the same `upper_fast` as the test process: the installed package in CI, the
source tree (with the in-place `_core`) in development. Never point them at the source tree blindly.
"""

from __future__ import annotations

import os
from pathlib import Path

import upper_fast

_roots = [Path(upper_fast.__file__).resolve().parent.parent]
try:
    import upper_fast_train

    _roots.append(Path(upper_fast_train.__file__).resolve().parent.parent)
except ImportError:  # serving-only install: no torch, no training package to find
    pass
PACKAGE_PYTHONPATH = os.pathsep.join(dict.fromkeys(str(r) for r in _roots))


def child_env(**extra: str) -> dict[str, str]:
    """os.environ plus PYTHONPATH that finds the package under test, plus `extra`."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PYTHONPATH, os.environ.get("PYTHONPATH", "")) if p)
    return env
