"""`upper-fast validate`: input checks of a dataset directory (the serving package's data command)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    val = subparsers.add_parser(
        "validate", help="check a dataset directory; quarantine bad rows with their reason",
        description="Validate catalog, users and search_log files (Parquet, CSV or JSONL). Every row is "
                    "accepted or quarantined; the counts reconcile exactly.",
    )
    val.add_argument("data", help="dataset directory")
    val.add_argument("--config", help="column-mapping config (JSON file)")
    val.add_argument("--quarantine", metavar="DIR", help="write rejected rows to DIR/<table>.quarantine.jsonl")
    val.add_argument("--accepted", metavar="DIR", help="write accepted rows to DIR/<table>.parquet (streaming)")
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    val.add_argument("--no-progress", action="store_true")
    val.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    import json as _json
    from pathlib import Path

    from upper_fast.data.validate import validate_dataset

    meta_path = Path(args.data) / "dataset.json"
    simulated = False
    if meta_path.is_file():
        try:
            simulated = bool(_json.loads(meta_path.read_text(encoding="utf-8")).get("simulated", False))
        except ValueError:
            simulated = False
    _, report = validate_dataset(args.data, args.config, args.quarantine, progress=not args.no_progress,
                                 simulated=simulated, accepted_dir=args.accepted, keep_log=False)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
    return 0 if report.quarantined == 0 else 1
