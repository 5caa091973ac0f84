"""Shared test fixtures: where the reference data is, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Real reference data lives beside the checkout, never inside it.
SHARED_DATA = Path(os.environ.get("Y9K_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()

# Ray Train's controller looks at its workers every 2 s: a few-step test run waits up to that long
# to see each start, failure and finish. Every Ray the tests start (in this process, `ray start`,
# `full.py` subprocesses) inherits this; what is tested does not depend on the interval.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

# Ray 2.60's first local `ray.init` with RAY_AUTH_MODE unset turns token auth on for the whole
# process (it sets os.environ["RAY_AUTH_MODE"] = "token") and writes ~/.ray/auth_token. A `ray
# start` head a later test starts from this process's environment then wants a token its clients
# do not send: its dashboard answered 401 until the test gave up. The tests start their own
# clusters and turn token auth on, on both sides, where they test it; the session runs with
# "disabled" unless the caller chose a mode.
RAY_AUTH_MODE_AT_START = os.environ.get("RAY_AUTH_MODE")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


# Property-based tests (hypothesis): `ci` is the default run, a fixed, derandomized set of
# examples small enough for the test-time budget; `long` searches much further, by hand:
#   HYPOTHESIS_PROFILE=long python -m pytest tests/unit -k property
try:
    from hypothesis import HealthCheck, settings

    _common = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                   print_blob=True)
    settings.register_profile("ci", max_examples=20, derandomize=True, database=None, **_common)
    settings.register_profile("long", max_examples=2000, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is in the dev extra; only the property tests need it
    pass


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
