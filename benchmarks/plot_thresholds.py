"""Plot a bundle's threshold calibration: per interaction tier, the share of that tier's validation
events kept (and the share of validation impressions kept) against the cosine threshold, with the
calibrated threshold marked.

    python benchmarks/plot_thresholds.py BUNDLE OUT.png [--title TEXT]

Reads `manifest.json`'s `thresholds_calibration` (written by `upper-fast export`; see docs/serving.md
"Calibrated thresholds"). Needs matplotlib (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TIERS = ("click", "favorite", "add_to_cart", "purchase")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    calib = manifest.get("thresholds_calibration") or {}
    if not calib.get("calibrated"):
        raise SystemExit(f"{args.bundle}: no calibrated thresholds in the manifest ({calib.get('why', 'not calibrated')})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TIERS), figsize=(4 * len(TIERS), 3.6), sharey=True)
    for ax, tier in zip(axes, TIERS):
        entry = calib["tiers"].get(tier, {})
        curve = entry.get("curve") or []
        if curve:
            th, kept, imp = zip(*curve)
            ax.plot(th, kept, marker=".", label=f"{tier} events kept")
            ax.plot(th, imp, marker=".", color="grey", label="impressions kept")
        ax.axvline(entry.get("threshold", float("nan")), color="red", linestyle="--",
                   label=f"threshold {entry.get('threshold', float('nan')):.3f}")
        ax.axvline(calib["negative"]["threshold"], color="black", linestyle=":",
                   label=f"negative {calib['negative']['threshold']:.3f}")
        note = "" if entry.get("calibrated") else " (not calibrated)"
        ax.set_title(f"{tier}: {entry.get('events', 0):,} events{note}")
        ax.set_xlabel("cosine threshold")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("share kept (validation window)")
    fig.suptitle(args.title or f"{args.bundle.name}: thresholds calibrated on {calib['events']:,} {calib['window']} events")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
