"""Hinge thresholds calibrated on validation events (upper_fast_train.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from upper_fast_train.calibration import calibrate_thresholds

TRAINED = {"negative": 0.2, "click": 0.5, "favorite": 0.55, "add_to_cart": 0.6, "purchase": 0.65}


def _events(rng, n_per_tier=400):
    # Stronger interactions sit at higher cosines; impressions lowest. Favorites are scarce.
    parts = [(0, 0.05, 2000), (1, 0.20, n_per_tier), (2, 0.25, 10), (3, 0.28, n_per_tier), (4, 0.30, n_per_tier)]
    cos = np.concatenate([rng.normal(mu, 0.03, n) for _, mu, n in parts]).astype(np.float32)
    labels = np.concatenate([np.full(n, code) for code, _, n in parts])
    return cos, labels


def test_each_tier_keeps_its_stated_share_and_tiers_are_monotone():
    cos, labels = _events(np.random.default_rng(0))
    th, report = calibrate_thresholds(cos, labels, TRAINED, tier_keep=0.5, negative_keep=0.99)
    for tier, code in (("click", 1), ("add_to_cart", 3), ("purchase", 4)):
        assert report["tiers"][tier]["calibrated"]
        assert th[tier] == pytest.approx(np.median(cos[labels == code]), abs=1e-6)
        assert report["tiers"][tier]["kept"] == pytest.approx(0.5, abs=0.01)
    # Too few favorites: the tier takes the threshold of the calibrated tier below it.
    assert not report["tiers"]["favorite"]["calibrated"] and "click's" in report["tiers"]["favorite"]["why"]
    assert th["favorite"] == th["click"]
    assert th["negative"] < th["click"] <= th["favorite"] <= th["add_to_cart"] <= th["purchase"]
    engaged = cos[labels > 0]
    assert (engaged >= th["negative"]).mean() == pytest.approx(0.99, abs=0.005)
    assert report["negative"]["impressions_cut"] > 0.5  # impressions sit well below the engagements
    assert len(report["tiers"]["click"]["curve"]) == 21


def test_no_events_keeps_the_trained_thresholds_and_bad_shares_fail():
    th, report = calibrate_thresholds(np.zeros(0, np.float32), np.zeros(0, np.int64), TRAINED)
    assert th == TRAINED and not report["negative"]["calibrated"]
    with pytest.raises(ValueError, match="tier_keep"):
        calibrate_thresholds(np.zeros(3), np.zeros(3), TRAINED, tier_keep=1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        calibrate_thresholds(np.zeros(3), np.zeros(2), TRAINED)
