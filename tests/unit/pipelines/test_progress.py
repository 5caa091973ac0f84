"""Console progress: the training line built from a worker's report, the ETA, and the generic
items-done lines of evaluation and `predict`."""

from __future__ import annotations

import io

import pytest

from pipelines.progress import Progress, format_duration
from pipelines.train.progress import TrainProgress, train_line

REPORT = {"step": 40, "window_steps": 20, "step_s": 0.5, "loss_total": 12.34567,
          "loss_coord": 0.5, "loss_obj": 1.25, "loss_noobj": 3.0, "loss_cls": 7.5, "lr": 0.001,
          "images_per_s": 32.04, "data_wait_fraction": 0.034}


def test_train_line_says_step_losses_rate_wait_and_eta():
    line = train_line(REPORT, 400, 190.0)
    assert line == ("train: step 40/400  loss 12.3457 (coord 0.500 obj 1.250 noobj 3.000 cls 7.500)  lr 1.00e-03  "
                    "32.0 images/s  data wait 3%  ETA 3m10s")


def test_durations():
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, 3720, -3)] == ["0s", "59s", "1m01s", "59m59s", "1h02m", "0s"]


@pytest.fixture
def progress(monkeypatch):
    """A TrainProgress whose queue is a plain list (the Ray queue is exercised in test_train_ray)."""
    import ray.util.queue

    monkeypatch.setattr(ray.util.queue, "Queue", lambda **kw: None)
    out = io.StringIO()
    return TrainProgress(400, stream=out, terminal=False), out


def test_eta_from_the_driver_clock_after_the_first_report(progress):
    p, out = progress
    # First report: only the worker's window rate is known (0.5 s/step x 360 steps left).
    assert p.eta(40, 100.0, 0.5) == pytest.approx(180.0)
    p.show(REPORT)
    first_time = p._first[0]
    # Later: the driver's wall time per step since then (checkpoints included), 1 s/step here.
    assert p.eta(60, first_time + 20.0, 0.5) == pytest.approx(340.0)
    assert out.getvalue().startswith("train: step 40/400  loss 12.3457")
    assert p.lines == [out.getvalue().rstrip("\n")]


def test_items_progress_prints_every_n_and_the_last():
    out = io.StringIO()
    p = Progress("predict", 5, every=2, stream=out, terminal=False)
    for _ in range(5):
        p.update(1)
    lines = out.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["predict: 2/5 images", "predict: 4/5 images", "predict: 5/5 images"]
    assert "images/s" in lines[-1] and lines[-1].endswith("ETA 0s")
