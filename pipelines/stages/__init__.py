"""Ray Data stages of the pipeline (ingest, anchors): URIs in, URIs out, idempotent, atomic.

Ray is started once per process by whoever runs the stages, sized for everything that process
will run: ``y9k run`` (the job) and ``y9k train`` ask for what training needs
(:func:`pipelines.train.data.cpus_needed`), ``y9k ingest`` / ``y9k anchors`` for nothing beyond
this machine's cores. A stage function calls :func:`ensure_ray` too, which then only checks.
"""

from __future__ import annotations

import logging
import math
import os

from pipelines.config import RayConfig

log = logging.getLogger("y9k")

# The local instance this process started: (its GCS address, its logical CPUs).
_started_local: tuple[str, int] | None = None


def ensure_ray(ray_cfg: RayConfig, cpus: float = 0) -> None:
    """Start or join Ray as ``ray_cfg`` says, with at least ``cpus`` logical CPUs for a local
    instance (what the caller will run needs: 0 for ingest, ``cpus_needed(train)`` to train).

    A process already connected keeps its Ray, except a local instance this function started
    smaller than ``cpus`` (e.g. `y9k ingest` then `y9k train` in one Python process): that one is
    restarted at the new size, since one local instance serves every later stage of the process.
    """
    import ray

    global _started_local
    want = local_cpus(ray_cfg, cpus)
    if ray.is_initialized():
        ours = _started_local is not None and _started_local[0] == ray.get_runtime_context().gcs_address
        if not ours or _started_local[1] >= want:
            return
        log.info("ray: restarting this process's local instance with %d CPUs (it has %d)", want, _started_local[1])
        ray.shutdown()
    _started_local = None
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # "local": a new instance even when a `ray start` cluster runs on this machine. No
        # dashboard (seconds of startup and a core's worth of processes on a small machine), so
        # no State API either: every worker imports pipelines.worker_logs first, which quiets
        # what polls it. (Preloaded rather than a runtime_env setup hook: any job runtime_env
        # keeps workers from the prestarted pool, ~0.7 s more per actor measured.)
        ray.init(
            address="local",
            num_cpus=want,
            include_dashboard=False,
            _system_config={"preload_python_modules": ["pipelines.worker_logs"]},
        )
        _started_local = (ray.get_runtime_context().gcs_address, want)


def local_cpus(ray_cfg: RayConfig, cpus: float = 0) -> int:
    """Logical CPUs for a local instance: ``ray.num_cpus`` when set, else the machine's cores, or
    ``cpus`` when more.

    The training workers and each data stream hold whole CPUs (see train.stage); the streams wait
    on training much of the time, so a small machine can hold one more than it has cores."""
    if ray_cfg.num_cpus:
        return ray_cfg.num_cpus
    return max(os.cpu_count() or 1, math.ceil(cpus))
