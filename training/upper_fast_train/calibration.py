"""Calibrating the multi-part hinge thresholds on the validation window, at export.

Training learns one threshold per interaction tier (click <= favorite <= add_to_cart <= purchase) and
one for negatives, but the cosines a trained model gives are not on the scale those constants assume,
so served tiers would carry no information. Export therefore re-sets them from the validation
window's events, scored exactly as the service scores them (raw cosine of query-user vector and
product vector):

- tier t's threshold is the cosine that keeps `tier_keep` of the validation events of type t (the
  (1 - tier_keep) quantile of their cosines); the tiers are then made monotone (a stronger tier never
  has a lower threshold);
- the negative threshold (the pruning cut, `min_tier=0`) is the cosine that keeps `negative_keep` of
  all validation engagements, kept strictly below the click threshold; the report says which share of
  the validation impressions (shown, not engaged) it cuts.

A tier with fewer than `min_events` validation events takes the threshold of the nearest calibrated
tier below it (else above it); when no tier has enough events, the trained thresholds stay.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from upper_fast.interactions import INTERACTION_CODES

__all__ = ["TIERS", "calibrate_thresholds"]

TIERS = ("click", "favorite", "add_to_cart", "purchase")


def _curve(cos_pos: np.ndarray, cos_imp: np.ndarray, points: int = 21) -> list[list[float]]:
    """[threshold, share of positives kept, share of impressions kept] over the positives' range."""
    if len(cos_pos) == 0:
        return []
    grid = np.quantile(cos_pos, np.linspace(0.0, 1.0, points))
    out = []
    for th in grid:
        imp = float((cos_imp >= th).mean()) if len(cos_imp) else float("nan")
        out.append([float(th), float((cos_pos >= th).mean()), imp])
    return out


def calibrate_thresholds(cosines: np.ndarray, labels: np.ndarray, trained: dict[str, float], *,
                         tier_keep: float = 0.5, negative_keep: float = 0.99,
                         min_events: int = 20) -> tuple[dict[str, float], dict[str, Any]]:
    """(thresholds, report) from validation events.

    cosines: (m,) float32 raw cosine of each event's query-user vector with its product's vector;
    labels: (m,) interaction codes (0 impression, 1 click ... 4 purchase); trained: the run's
    thresholds.json. report: per tier the events, threshold (trained and calibrated) and the share of
    its validation events kept; for negatives the share of engagements kept and of impressions cut;
    a precision/recall style curve per tier for plots."""
    if not 0.0 < tier_keep < 1.0 or not 0.0 < negative_keep <= 1.0:
        raise ValueError(f"tier_keep must be in (0, 1) and negative_keep in (0, 1], got {tier_keep}, {negative_keep}")
    cos = np.asarray(cosines, dtype=np.float64)
    lab = np.asarray(labels)
    if cos.shape != lab.shape:
        raise ValueError(f"cosines and labels differ in shape ({cos.shape} != {lab.shape})")
    impressions = cos[lab == INTERACTION_CODES["impression"]]
    out = {t: float(trained[t]) for t in (*TIERS, "negative")}
    report: dict[str, Any] = {"tier_keep": tier_keep, "negative_keep": negative_keep, "min_events": min_events,
                              "impressions": int(len(impressions)), "tiers": {}}
    calibrated: dict[str, float] = {}
    for t in TIERS:
        c = cos[lab == INTERACTION_CODES[t]]
        entry: dict[str, Any] = {"events": int(len(c)), "trained": float(trained[t]), "calibrated": len(c) >= min_events}
        if entry["calibrated"]:
            calibrated[t] = float(np.quantile(c, 1.0 - tier_keep))
        entry["curve"] = _curve(c, impressions)
        report["tiers"][t] = entry
    for i, t in enumerate(TIERS):
        if t in calibrated:
            out[t] = calibrated[t]
            continue
        below = [u for u in TIERS[:i][::-1] if u in calibrated]
        above = [u for u in TIERS[i + 1:] if u in calibrated]
        if below or above:
            source = (below or above)[0]
            out[t] = calibrated[source]
            report["tiers"][t]["why"] = f"fewer than {min_events} validation events: {source}'s threshold"
        else:
            report["tiers"][t]["why"] = f"fewer than {min_events} validation events in every tier: trained threshold"
    running = -np.inf
    for t in TIERS:  # monotone: negative < click <= favorite <= add_to_cart <= purchase
        running = max(running, out[t])
        out[t] = float(running)
    engaged = cos[lab > 0]
    neg: dict[str, Any] = {"events": int(len(engaged)), "trained": float(trained["negative"])}
    if len(engaged) >= min_events:
        out["negative"] = float(np.quantile(engaged, 1.0 - negative_keep))
        neg["calibrated"] = True
    else:
        neg["calibrated"] = False
        neg["why"] = f"fewer than {min_events} validation engagements: trained threshold kept"
    out["negative"] = float(min(out["negative"], np.nextafter(np.float32(out["click"]), np.float32(-np.inf))))
    neg["engagements_kept"] = float((engaged >= out["negative"]).mean()) if len(engaged) else float("nan")
    neg["impressions_cut"] = float((impressions < out["negative"]).mean()) if len(impressions) else float("nan")
    report["negative"] = neg
    for t in TIERS:
        c = cos[lab == INTERACTION_CODES[t]]
        report["tiers"][t]["threshold"] = out[t]
        report["tiers"][t]["kept"] = float((c >= out[t]).mean()) if len(c) else float("nan")
    report["negative"]["threshold"] = out["negative"]
    return out, report
