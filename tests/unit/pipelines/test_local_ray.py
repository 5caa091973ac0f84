"""The tests' own local Ray instance and the session's environment."""

from __future__ import annotations

import os


def test_a_local_instance_leaves_the_sessions_ray_auth_mode(ray_local):
    """Ray 2.60's first local `ray.init` with RAY_AUTH_MODE unset sets it to "token" for the whole
    process; a `ray start` head a later test started from that environment then refused its own
    clients (`make test` without RAY_AUTH_MODE failed the job-submit test). tests/conftest.py pins
    the mode for the session; a local instance must not change it."""
    from tests.conftest import RAY_AUTH_MODE_AT_START

    assert ray_local.is_initialized()
    assert os.environ["RAY_AUTH_MODE"] == (RAY_AUTH_MODE_AT_START or "disabled")
