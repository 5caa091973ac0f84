"""Fixtures for pipeline tests: one local Ray instance shared by the whole session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance (2 CPUs, no dashboard), started once and shut down at the end."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if not ray.is_initialized():
        # address="local": never join a cluster another process left running (`ray start`).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _mlflow_http_env(monkeypatch):
    """`y9k registry` / `predict --model` set MLflow's fail-fast HTTP variables in the process
    (pipelines.registry.fail_fast_http): undo them after each test, so later tests see defaults."""
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(var, "")  # records the value before the test, restored after it
        monkeypatch.delenv(var)
