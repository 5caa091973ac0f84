"""Training progress on the driver's console, reported through Ray Train.

Workers do not print. At every ``train.log_every`` steps each worker calls ``ray.train.report``
with its window metrics (the ones rank 0 logs to MLflow) marked ``progress``; Ray Train's
controller hands each report to :class:`TrainProgressCallback`, which puts rank 0's into a Ray
queue, and :class:`TrainProgress`, a thread on the driver, prints it: a tqdm bar on a terminal,
else one line per report::

    train: step 40/400  loss 12.3456 (coord 0.512 obj 1.204 noobj 3.100 cls 7.530)  lr 1.00e-03
    12.4 images/s  data wait 3%  ETA 6m12s
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from ray.train import UserCallback

from pipelines.progress import format_duration, is_terminal

log = logging.getLogger("y9k.train")

# The key that marks a training report as a progress report (a checkpoint report may carry one too).
PROGRESS_KEY = "progress"
# Loss parts shown on the console, in this order (the MLflow run holds every part).
LOSS_PARTS = ("coord", "obj", "noobj", "cls")


def train_line(m: Mapping[str, Any], max_steps: int, eta_s: float | None) -> str:
    """One console line from a progress report (the metrics rank 0 logs to MLflow)."""
    parts = " ".join(f"{k} {m['loss_' + k]:.3f}" for k in LOSS_PARTS if f"loss_{k}" in m)
    eta = format_duration(eta_s) if eta_s is not None else "?"
    return (f"train: step {int(m['step'])}/{max_steps}  loss {m['loss_total']:.4f} ({parts})  "
            f"lr {m['lr']:.2e}  {m['images_per_s']:.1f} images/s  data wait {100 * m['data_wait_fraction']:.0f}%  "
            f"ETA {eta}")


class TrainProgress:
    """Driver side: a queue the controller callback fills, and a thread that prints it.

        with TrainProgress(max_steps) as progress:
            TorchTrainer(..., run_config=RunConfig(callbacks=[progress.callback()])).fit()
    """

    def __init__(self, max_steps: int, stream: TextIO | None = None, terminal: bool | None = None) -> None:
        from ray.util.queue import Queue

        self.max_steps = max_steps
        self.stream = stream or sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        # num_cpus=0: the queue must not take a CPU the training workers or data streams need.
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.lines: list[str] = []  # what was printed (for the caller and tests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-progress", daemon=True)
        self._bar = None
        self._first: tuple[float, int] | None = None

    def callback(self) -> Any:
        return TrainProgressCallback(self.queue)

    def __enter__(self) -> TrainProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        if self._bar is not None:
            self._bar.close()
        try:
            self.queue.shutdown()
        except Exception:  # the queue actor is gone with the cluster already
            pass

    def eta(self, step: int, now: float, window_s_per_step: float) -> float:
        """Seconds left: the driver's wall time per step since the first report (checkpoints and
        pauses included), or the worker's own window rate before there are two reports."""
        left = self.max_steps - step
        if self._first is None or step <= self._first[1]:
            return left * window_s_per_step
        return left * (now - self._first[0]) / (step - self._first[1])

    def show(self, m: Mapping[str, Any]) -> None:
        now, step = time.monotonic(), int(m["step"])
        eta = self.eta(step, now, float(m.get("step_s", 0.0)))
        if self._first is None:
            self._first = (now, step)
        line = train_line(m, self.max_steps, eta)
        self.lines.append(line)
        if self.terminal:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self.max_steps, initial=step - int(m.get("window_steps", 0)), desc="train",
                                 unit="step", file=self.stream, dynamic_ncols=True)
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(line.split("  ", 1)[1], refresh=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _drain(self) -> None:
        import queue as pyqueue

        while True:
            try:
                self.show(self.queue.get_nowait())
            except (pyqueue.Empty, Exception):  # noqa: B014 - ray's Empty is the stdlib one; a dead actor ends it too
                return

    def _run(self) -> None:
        import queue as pyqueue

        while not self._stop.is_set():
            try:
                m = self.queue.get(timeout=0.5)
            except pyqueue.Empty:
                continue
            except Exception as e:  # the queue actor died: progress is lost, training is not
                log.debug("train progress stopped: %s", e)
                return
            self.show(m)


class TrainProgressCallback(UserCallback):
    """Runs on Ray Train's controller: forwards rank 0's progress reports to the driver's queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics and metrics[0].get(PROGRESS_KEY):
            self.queue.put_nowait(dict(metrics[0]))
