"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory that Ray Train uploads to the run's storage path (local or any
fsspec/pyarrow URI such as ``s3://``) when the workers call ``ray.train.report``:

- ``train_state.pt`` (rank 0): model and optimizer state, the optimizer step, images seen,
  the schedule parameters, the MLflow run id;
- ``worker_<rank>.pt`` (every rank): that worker's RNG states and data position (epoch and
  batch of each stream), since each DDP worker reads different rows.

The learning rate is a pure function of the step (see optim.learning_rate), so the step *is*
the scheduler state; the schedule parameters are stored to refuse a resume whose schedule
changed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.errors import PipelineError

STATE_FILE = "train_state.pt"


class CheckpointError(PipelineError):
    """A checkpoint that cannot be resumed from; the message names the file and the field."""


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def worker_file(rank: int) -> str:
    return f"worker_{rank}.pt"


def write_checkpoint(directory: str | Path, rank: int, worker: dict[str, Any],
                     state: dict[str, Any] | None = None) -> None:
    """Write this rank's part of a checkpoint into a local directory (rank 0 adds the state)."""
    directory = Path(directory)
    torch.save({**worker, "rng": rng_state()}, directory / worker_file(rank))
    if state is not None:
        torch.save(state, directory / STATE_FILE)


def read_checkpoint(directory: str | Path, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(shared state, this rank's worker part or None when the checkpoint had fewer workers)."""
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.exists():
        raise CheckpointError(f"checkpoint {directory}: {STATE_FILE} is missing (an incomplete checkpoint)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("model", "optimizer", "step", "seen", "schedule"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path}: field '{key}' is missing")
    wpath = directory / worker_file(rank)
    worker = torch.load(wpath, map_location="cpu", weights_only=False) if wpath.exists() else None
    return state, worker


def check_schedule(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume under a different learning-rate schedule: the step would mean another lr."""
    for key, value in current.items():
        if key in saved and saved[key] != value:
            raise CheckpointError(f"checkpoint {where}: field 'schedule.{key}' is {saved[key]!r} but the "
                                  f"config says {value!r}; resume with the original schedule or start a new run")


def warm_start(model: torch.nn.Module, uri: str, storage_options: dict[str, Any] | None = None,
               tracking_uri: str | None = None) -> str:
    """Initialize ``model`` from a darknet ``.weights`` file (local or remote; partial files such
    as ``darknet19_448.conv.23`` fill the first layers) or from an MLflow model
    (``models:/name@champion``, ``runs:/<id>/model``: its ``model.pt`` state dict, taking every
    tensor whose name and shape match, so a new head can sit on a trained trunk).
    Returns a one-line summary for the log."""
    import tempfile

    from pipelines import storage

    with tempfile.TemporaryDirectory() as tmp:
        if uri.startswith(("models:/", "runs:/")):
            import mlflow

            from pipelines.registry import using_tracking_uri

            # models:/ URIs resolve through the registry, which defaults elsewhere
            with using_tracking_uri(tracking_uri):
                local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp, tracking_uri=tracking_uri))
            found = sorted(local.rglob("model.pt"))
            if not found:
                raise CheckpointError(f"warm start {uri}: no model.pt in the model's artifacts")
            saved = torch.load(found[0], map_location="cpu", weights_only=True)
            own = model.state_dict()
            match = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
            if not match:
                raise CheckpointError(f"warm start {uri}: no tensor matches this model (names or shapes differ)")
            model.load_state_dict(match, strict=False)
            return f"{len(match)}/{len(own)} tensors from {uri}"
        from yolo_core.weights import load_weights

        path = Path(tmp) / (os.path.basename(uri.rstrip("/")) or "init.weights")
        path.write_bytes(storage.read_bytes(uri, storage_options))
        info = load_weights(model, path)
        return f"{info.layers_loaded} conv layers from {storage.redact_uri(uri)}"
