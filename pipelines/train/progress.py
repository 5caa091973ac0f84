"""Training progress on the driver's console, sent by rank 0 straight to the driver's queue.

Workers do not print. At every ``train.log_every`` steps rank 0 sends its window metrics (the
ones it logs to MLflow) to a Ray queue with :class:`ProgressSender`, without waiting, and
:class:`TrainProgress`, a thread on the driver, prints them: a tqdm bar on a terminal, else one
line per window::

    train: step 40/400  loss 12.3456 (coord 0.512 obj 1.204 noobj 3.100 cls 7.530)  lr 1.00e-03
    12.4 images/s  data wait 3%  ETA 6m12s

Why not ``ray.train.report``: a report is a barrier over all workers and waits until Ray Train's
controller has taken the previous one off its one-slot queue, which it polls every
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s). Reporting every log window held training to one
window per poll: 80 images/s where the same run makes 200+ (tests/benchmarks/bench_train.py,
issue 20). Workers report to Ray Train at checkpoints only.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from pipelines.progress import format_duration, is_terminal

log = logging.getLogger("y9k.train")

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
            TorchTrainer(..., train_loop_config={..., "progress_queue": progress.queue}).fit()
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


class ProgressSender:
    """Worker side (rank 0): puts each window's metrics on the driver's queue without waiting for
    the queue actor; :meth:`close` waits for the last one (calls from one caller run in order, so
    every window has arrived when it returns). ``queue`` None sends nothing (other ranks)."""

    def __init__(self, queue: Any) -> None:
        self.queue, self._last = queue, None

    def send(self, metrics: Mapping[str, Any]) -> None:
        if self.queue is None:
            return
        try:
            self._last = self.queue.actor.put_nowait.remote(dict(metrics))
        except Exception as e:  # the driver's queue is gone: progress is lost, training is not
            log.debug("train progress not sent: %s", e)
            self.queue = None

    def close(self, timeout: float = 10.0) -> None:
        import ray

        if self._last is not None:
            try:
                ray.get(self._last, timeout=timeout)
            except Exception as e:
                log.debug("train progress: last window not confirmed: %s", e)
            self._last = None
