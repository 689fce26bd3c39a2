"""Shared test fixtures, and the import path for the shared test modules.

The tests live in subfolders that mirror the code (serving/, training/, data/, native/); the modules
they share (serve_tiny, live_tiny, _train_synthetic, _paths, featurizer_reference) live here, beside
this file, and are imported by name from any subfolder. The subfolders have no __init__.py, so pytest
imports each test file by its basename: basenames must stay unique across tests/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Real judged data lives beside the checkout (../shared/data), never in the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason where it is absent."""
    if not (SHARED_DATA / "homedepot" / "products.csv").exists():
        pytest.skip(f"real judged data not found at {SHARED_DATA} (it lives beside the checkout, not in it)")
    return SHARED_DATA
