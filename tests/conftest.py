"""Shared fixtures: tiny real models built on the fly, real product data from ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FASHION_CATALOG


def pytest_collection_modifyitems(config, items):
    if not FASHION_CATALOG.is_dir():
        raise pytest.UsageError(f"real test data not found at {FASHION_CATALOG} (set MOON_SHARED_DATA)")


@pytest.fixture(scope="session")
def tiny_moon_dir(tmp_path_factory) -> Path:
    """A tiny MOON checkpoint (seed 0), built once per session."""
    from moon_swift.apps.tiny_model import make_tiny

    out = tmp_path_factory.mktemp("tiny-moon")
    make_tiny(out, seed=0)
    return out


@pytest.fixture(scope="session")
def catalog_images() -> list[Path]:
    """A few real catalog photos (sorted, so tests are reproducible)."""
    return sorted((FASHION_CATALOG / "images").glob("*.jpg"))[:8]
