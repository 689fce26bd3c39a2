"""Replays saved inputs through a fuzz target in one process, without libFuzzer:

    python fuzz/replay.py TARGET FILE...

Prints one line per input, `PASS name` or `FAIL name: <exception>`; exit status 1 if any failed.
Used by tests/serving/test_reliability_fuzz.py for the crash inputs kept under tests/regressions/.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    os.environ["UPPER_FAST_FUZZ_REPLAY"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    module = importlib.import_module(f"fuzz_{argv[0]}")
    failed = 0
    for name in argv[1:]:
        try:
            module.TestOneInput(Path(name).read_bytes())
            print(f"PASS {Path(name).name}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reporting any failure is the point
            failed += 1
            last = traceback.extract_tb(exc.__traceback__)[-1]
            print(f"FAIL {Path(name).name}: {type(exc).__name__}: {str(exc)[:300]} "
                  f"({Path(last.filename).name}:{last.lineno})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
