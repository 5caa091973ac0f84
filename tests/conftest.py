"""Shared test fixtures: where the reference data is, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Real reference data lives beside the checkout, never inside it.
SHARED_DATA = Path(os.environ.get("Y9K_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip naming what is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data {p} is absent (expected ../shared/data beside the checkout; "
                    "set Y9K_SHARED_DATA to its location)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()
