"""MLflow tracking for training: one run, written by rank 0 only, continued on resume.

The driver creates the run (or reuses the id found in the checkpoint it resumes from) and
hands its id to the workers; rank 0 logs params (the flattened config; every param, tag and
text artifact passes through ``pipelines.redaction.redact``), metrics every ``train.log_every``
steps through MLflow's asynchronous logging (the training step never waits for the tracking server), system facts as tags, and
artifacts. Every other rank gets a tracker whose methods do nothing. The driver also ends the
run (:func:`end_run`) once a fit has reached the last step.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from typing import Any

from pipelines import redaction


def create_run(tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
    """Create the training run (driver side); returns its id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    return client.create_run(exp_id, run_name=run_name, tags=redaction.redact(dict(tags))).info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark the training run ended (driver side, after the fit).

    Not in the worker: ``set_terminated`` first shuts down the process's asynchronous logging
    queue, whose thread waits up to 1 s for its next item before it sees the request, so a
    worker that had logged metrics spent ~1 s there at the end of every fit. The workers wait on
    their own batches (``Tracker.flush``) before they return; the driver never logs asynchronously."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


def system_tags(world_size: int, device: str) -> dict[str, str]:
    import torch

    return {
        "sys.python": platform.python_version(), "sys.torch": torch.__version__,
        "sys.host": platform.node(), "sys.cpus": str(os.cpu_count()), "sys.device": device,
        "sys.world_size": str(world_size),
        "sys.gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
    }


class Tracker:
    """Logs to one MLflow run when enabled (rank 0); a no-op otherwise."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, enabled: bool) -> None:
        self.enabled = bool(enabled and tracking_uri and run_id)
        self.run_id = run_id
        self.client = None
        self._pending: list[Any] = []  # the asynchronous metric batches not yet known written
        if self.enabled:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri)
            self.client.update_run(run_id, status="RUNNING")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params once per run (MLflow refuses to change a param, so a resume does not relog)."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, redaction.redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-request param limit
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, redaction.redact(str(v))) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._pending.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, redaction.redact(text), artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        if self.enabled:
            self.client.log_dict(self.run_id, redaction.redact(obj), artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        if self.enabled:
            self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def flush(self) -> None:
        """Wait until every metric batch logged so far is written (raises if one failed).

        Not ``mlflow.flush_async_logging()``: that flushes the store of the process's default
        tracking URI, not this client's; in a Ray worker it created a stray ./mlflow.db (in Ray's
        session folder) and ~1 s of database set-up at every checkpoint, and flushed nothing."""
        pending, self._pending = self._pending, []
        for op in pending:
            op.wait()


def prediction_grid(images: Any, detections: list[Any], names: list[str] | None = None, cols: int = 4) -> Any:
    """Tile images (N, 3, S, S) in [0, 1] with their detections drawn: a PIL image for MLflow."""
    from PIL import Image, ImageDraw

    n, _, s, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * s, rows * s), (255, 255, 255))
    for i in range(n):
        tile = Image.fromarray((images[i].permute(1, 2, 0).clamp(0, 1) * 255).byte().cpu().numpy())
        draw = ImageDraw.Draw(tile)
        det = detections[i]
        for box, score, cls in zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist()):
            x0, y0, x1, y1 = (v * s for v in box)
            draw.rectangle([x0, y0, x1, y1], outline=(255, 0, 0), width=2)
            label = names[cls] if names and cls < len(names) else str(cls)
            draw.text((x0 + 2, y0 + 1), f"{label} {score:.2f}", fill=(255, 255, 0))
        grid.paste(tile, ((i % cols) * s, (i // cols) * s))
    return grid
