"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# Real judged data lives beside the checkout (../shared/data), never in the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason where it is absent."""
    if not (SHARED_DATA / "homedepot" / "products.csv").exists():
        pytest.skip(f"real judged data not found at {SHARED_DATA} (it lives beside the checkout, not in it)")
    return SHARED_DATA
