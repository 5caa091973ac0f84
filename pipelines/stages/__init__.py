"""Ray Data stages of the pipeline (ingest, anchors): URIs in, URIs out, idempotent, atomic."""

from __future__ import annotations

import os
from typing import Any


def ensure_ray(cfg: Any) -> None:
    """Start or join Ray as the config says, unless this process is already connected."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # "local": a new instance even when a `ray start` cluster runs on this machine.
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False)
