"""Hybrid retrieval on the simulated marketplace (SIMULATED data): purchase recall@100 of dense only,
lexical only, RRF and the bundle's fusion on the test window, per segment and query length, as served
(signed-in searchers by id, so the dense channel and the fused list are personalised).

    PYTHONPATH=python:training python benchmarks/hybrid_simulated.py RUN DATA BUNDLE [--out result.json]

RUN and DATA: a training run and its dataset (e.g. `upper-fast demo --out D`: D/run, D/data). BUNDLE
is exported from them with the lexical channel (`export_bundle(..., lexical=True)`: the fusion is
fitted on the validation window's engagements) unless it already has one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from bench_serving import machine

    from upper_fast.data import load_dataset
    from upper_fast.lexical import FusionModel
    from upper_fast_train.fusion import channels_table, hybrid_eval_bundle

    dataset = load_dataset(args.data, progress=False)
    report: dict[str, Any] = {"data": "SIMULATED", "machine": machine(), "run": str(args.run), "bundle": str(args.bundle)}
    if not (args.bundle / "lexical.json").exists():
        from upper_fast_train.export import export_bundle

        t0 = time.perf_counter()
        export_bundle(args.run, args.bundle, dataset, lexical=True, overwrite=True, progress=False)
        report["export_s"] = time.perf_counter() - t0
    report["fusion"] = FusionModel.load(args.bundle).to_dict()
    t0 = time.perf_counter()
    report["channels"] = hybrid_eval_bundle(args.bundle, dataset, k=args.k)
    report["eval_s"] = time.perf_counter() - t0
    print(channels_table(report["channels"], "SIMULATED"))
    print(f"fusion: {report['fusion']['method']}; fit report: {json.dumps(report['fusion']['report'])}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
