"""Checkpoint files and MLflow tracking of the training loop (no Ray needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.config import load_config
from pipelines.train import checkpoint as ck
from pipelines.train.tracking import Tracker, create_run, end_run


def test_checkpoint_roundtrip_restores_rng_and_state(tmp_path):
    net = nn.Conv2d(3, 4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(1, 3, 8, 8)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": 17, "seen": 272,
             "run_id": "abc", "schedule": {"lr": 0.001}}
    ck.write_checkpoint(tmp_path, 0, {"position": {"det": {"epoch": 2, "batch": 5}}}, state)
    ck.write_checkpoint(tmp_path, 1, {"position": {"det": {"epoch": 2, "batch": 4}}})
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    loaded, worker = ck.read_checkpoint(tmp_path, 0)
    assert loaded["step"] == 17 and loaded["seen"] == 272 and loaded["run_id"] == "abc"
    assert worker["position"] == {"det": {"epoch": 2, "batch": 5}}
    assert ck.read_checkpoint(tmp_path, 1)[1]["position"] == {"det": {"epoch": 2, "batch": 4}}
    assert ck.read_checkpoint(tmp_path, 5)[1] is None  # more workers now than when saved
    net2 = nn.Conv2d(3, 4, 3)
    net2.load_state_dict(loaded["model"])
    assert torch.equal(net2.weight, net.weight)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state[net2.weight]["momentum_buffer"], opt.state[net.weight]["momentum_buffer"])
    ck.set_rng_state(worker["rng"])  # the random streams continue exactly from the save
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_incomplete_checkpoint_and_changed_schedule_are_clear_errors(tmp_path):
    with pytest.raises(ck.CheckpointError, match="train_state.pt is missing"):
        ck.read_checkpoint(tmp_path, 0)
    torch.save({"model": {}, "optimizer": {}, "step": 3, "schedule": {}}, tmp_path / ck.STATE_FILE)
    with pytest.raises(ck.CheckpointError, match="field 'seen' is missing"):
        ck.read_checkpoint(tmp_path, 0)
    with pytest.raises(ck.CheckpointError, match=r"schedule.lr.*0.001.*0.01"):
        ck.check_schedule({"lr": 0.001, "policy": "steps"}, {"lr": 0.01, "policy": "steps"}, "ckpt")
    ck.check_schedule({"lr": 0.001}, {"lr": 0.001, "policy": "steps"}, "ckpt")  # same: fine
    assert ck.CheckpointError.user_facing


def test_tracker_logs_params_without_secrets_and_async_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("demo", [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                               "storage.options={aws_secret_access_key: s3cr3t, endpoint_url: 'http://x'}"])
    uri = cfg.mlflow.resolved_tracking_uri()
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    run_id = create_run(uri, "exp", "train-test", {"stage": "train"})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where a default-URI store would appear (a Ray worker's folder)
    tr = Tracker(uri, run_id, enabled=True)
    tr.log_params(cfg.flat())
    for step in (10, 20):
        tr.log_metrics({"loss_total": 1.0 / step, "lr": 0.001}, step=step)

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    tr.flush()  # what a checkpoint waits for: the metrics logged so far are written
    assert [m.step for m in client.get_metric_history(run_id, "loss_total")] == [10, 20]
    assert list((tmp_path / "cwd").iterdir()) == []  # it flushed this run's store, no other
    tr.log_text(cfg.to_yaml(), "config.yaml")
    tr.flush()
    assert client.get_run(run_id).info.status == "RUNNING"  # a worker never ends the run
    end_run(uri, run_id)  # the driver does, after the fit
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.batch_size"] == "16"
    assert not any("s3cr3t" in v for v in run.data.params.values())
    hist = client.get_metric_history(run_id, "loss_total")
    assert [(m.step, m.value) for m in hist] == [(10, 0.1), (20, 0.05)]
    art = client.download_artifacts(run_id, "config.yaml", str(tmp_path))
    text = open(art).read()
    assert "batch_size: 16" in text and "s3cr3t" not in text


def test_disabled_tracker_does_nothing():
    tr = Tracker("sqlite:////nonexistent/dir/x.db", "run", enabled=False)
    tr.log_metrics({"a": 1.0}, step=1)
    tr.log_params({"a": 1})
    tr.flush()
    assert tr.client is None


def test_warm_start_from_darknet_weights_and_mlflow_model(tmp_path, monkeypatch):
    from yolo_core.models import create_model
    from yolo_core.weights import save_weights

    src = create_model("yolov2_tiny", width=0.125, num_classes=3)
    save_weights(src, tmp_path / "tiny.weights")
    dst = create_model("yolov2_tiny", width=0.125, num_classes=3)
    summary = ck.warm_start(dst, str(tmp_path / "tiny.weights"))
    assert summary.startswith("9 conv layers")
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        if "num_batches" not in name:
            assert torch.equal(a, b), name

    # An MLflow model's model.pt: matching tensors are taken, a different head is left alone.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = create_run(uri, "warm", "registered", {})
    (tmp_path / "model").mkdir()
    torch.save(src.state_dict(), tmp_path / "model" / "model.pt")
    from mlflow import MlflowClient

    MlflowClient(uri).log_artifacts(run_id, str(tmp_path / "model"), "model")
    other_head = create_model("yolov2_tiny", width=0.125, num_classes=5)
    summary = ck.warm_start(other_head, f"runs:/{run_id}/model", tracking_uri=uri)
    n_total = len(other_head.state_dict())
    assert summary.startswith(f"{n_total - 2}/{n_total} tensors")  # all but the head's weight and bias
    first = next(iter(src.state_dict()))
    assert torch.equal(other_head.state_dict()[first], src.state_dict()[first])
    MlflowClient(uri).log_text(run_id, "not a model", "empty/readme.txt")
    with pytest.raises(ck.CheckpointError, match="no model.pt"):
        ck.warm_start(other_head, f"runs:/{run_id}/empty", tracking_uri=uri)


def test_prediction_grid_draws_the_boxes():
    from pipelines.train.tracking import prediction_grid
    from yolo_core.postprocess import Detections

    images = torch.full((3, 3, 32, 32), 0.5)
    dets = [Detections(torch.tensor([[0.25, 0.25, 0.75, 0.75]]), torch.tensor([0.9]), torch.tensor([1]))]
    dets += [Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))] * 2
    grid = np.asarray(prediction_grid(images, dets, names=["a", "b"], cols=2))
    assert grid.shape == (64, 64, 3)
    red = (grid[..., 0] == 255) & (grid[..., 1] == 0)
    assert red[:32, :32].any() and not red[:, 32:].any() and not red[32:].any()
    assert (grid[32:, 32:] == 255).all()  # the empty fourth cell stays white
