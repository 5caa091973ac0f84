"""Ray Data stages of the pipeline (ingest, anchors): URIs in, URIs out, idempotent, atomic."""

from __future__ import annotations

import math
import os

from pipelines.config import Config


def ensure_ray(cfg: Config) -> None:
    """Start or join Ray as the config says, unless this process is already connected."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # "local": a new instance even when a `ray start` cluster runs on this machine.
        ray.init(address="local", num_cpus=cfg.ray.num_cpus or local_cpus(cfg), include_dashboard=False)


def local_cpus(cfg: Config) -> int:
    """Logical CPUs for a local instance: the machine's cores, or more when training needs them.

    The training workers and each data stream hold whole CPUs (see train.stage); the streams wait
    on training much of the time, so a small machine can hold one more than it has cores."""
    from pipelines.train.data import cpus_needed

    return max(os.cpu_count() or 1, math.ceil(cpus_needed(cfg.train)))
