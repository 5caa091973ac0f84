"""Ray Train end to end on a real 2-node local cluster (ray.cluster_utils.Cluster).

Tiny model (width 1/16), 64 px images, a handful of steps: the data path from Parquet shards
through map_batches to the workers, checkpoint + exact resume, MLflow logging, and a training
worker killed mid-run that the run survives.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipelines.config import load_config
from pipelines.shards import SHARD_SCHEMA, write_committed
from pipelines.train.optim import learning_rate

pytestmark = pytest.mark.slow

# A 6-node tree: root 0 with children 1..5; 1 and 2 have boxes, 3..5 image labels only.
PARENTS = [-1, 0, 0, 0, 0, 0]
COLORS = {1: (220, 40, 40), 2: (40, 40, 220), 3: (40, 200, 40), 4: (230, 200, 30), 5: (200, 40, 200)}


class SmallTree:
    """What run_train reads from a tree: parents (and a hash for the MLflow tag)."""

    parents = PARENTS

    def content_hash(self) -> str:
        return "test-tree-6"


def _jpeg(rng: np.random.Generator, size: int, boxes: list[tuple[int, list[float]]]) -> bytes:
    img = rng.integers(90, 140, (size, size, 3), dtype=np.uint8)
    for node, (cx, cy, w, h) in boxes:
        x0, y0 = int((cx - w / 2) * size), int((cy - h / 2) * size)
        x1, y1 = int((cx + w / 2) * size), int((cy + h / 2) * size)
        img[y0:y1, x0:x1] = COLORS[node]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(root: Path, n_det: int = 16, n_cls: int = 16, size: int = 64, seed: int = 0) -> list[str]:
    """Two shard directories in the ingest layout: detection rows and classification rows."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, n in (("detection", n_det), ("classification", n_cls)):
        rows = []
        for i in range(n):
            if kind == "detection":
                k = int(rng.integers(1, 3))
                boxes = []
                for _ in range(k):
                    w, h = rng.uniform(0.2, 0.4, 2)
                    cx, cy = rng.uniform(w / 2 + 0.02, 1 - w / 2 - 0.02), rng.uniform(h / 2 + 0.02, 1 - h / 2 - 0.02)
                    boxes.append((int(rng.integers(1, 3)), [float(cx), float(cy), float(w), float(h)]))
                node, label = -1, ""
            else:
                node = int(rng.integers(3, 6))
                boxes, label = [(node, [0.5, 0.5, 0.7, 0.7])], f"n0000000{node}"
            rows.append({
                "image_id": f"synth/{kind}/{i}", "dataset": "coco" if kind == "detection" else "imagenet",
                "split": "train", "kind": kind, "source_uri": f"/synthetic/{kind}/{i}.jpg",
                "image": _jpeg(rng, size, boxes), "orig_width": size, "orig_height": size, "width": size,
                "height": size,
                "boxes": [b for _, b in boxes] if kind == "detection" else [],
                "box_nodes": [n for n, _ in boxes] if kind == "detection" else [],
                "box_labels": [str(n) for n, _ in boxes] if kind == "detection" else [],
                "image_node": node, "image_label": label,
            })
        d = str(root / "shards" / f"synth-{kind}")
        write_committed(d, [pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)])
        out.append(d)
    return out


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes (2 logical CPUs each) in this machine; this test's own cluster, stopped by itself."""
    import ray
    from ray.cluster_utils import Cluster

    # RAY_AUTH_MODE is left as the session has it: changing it after an earlier ray.init in this
    # process (the unit tests' local instance) leaves new actors unable to start.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    # Cluster records itself as "the current cluster" for address-less ray.init calls on this
    # machine; this test connects by address, so other processes should not find it there.
    ray._common.utils.reset_ray_address()
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the module's runs (each test reads its own run ids): its schema is
    created once, here, instead of by the first process of every test."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    SqlAlchemyStore(uri, "./mlruns")
    return uri


def _cfg(tmp_path: Path, tracking_uri: str, *overrides: str):
    return load_config("demo", [
        f"storage.root={tmp_path}", f"mlflow.tracking_uri={tracking_uri}",
        "mlflow.experiment=train-test", "model.name=yolo9000", "model.width=0.0625",
        "train.batch_size=4", "train.burn_in=3", "train.lr=0.01", "train.policy=steps",
        "train.input_size=64", "train.multiscale_min=64", "train.multiscale_max=96", "train.multiscale_every=2",
        "train.log_every=1", "train.det_fraction=0.5", "train.max_failures=0", *overrides,
    ])


def _history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


def test_stop_and_resume_continue_exactly(cluster, shards, tmp_path, tracking_uri, capsys):
    from pipelines.train.stage import run_train

    cfg = _cfg(tmp_path, tracking_uri, "train.max_steps=6", "train.steps=[4]", "train.scales=[0.1]", "train.checkpoint_every=2",
               "train.eval_every=3", "eval.input_size=64", "eval.draw_images=2")
    out = str(tmp_path / "train" / "run1")
    first = run_train(cfg, shards, SmallTree(), [[1.0, 1.0], [3.0, 3.0]], out, stop_after=3)
    assert first.step == 3 and first.checkpoint_uri.endswith("checkpoint_000000003")
    # The driver's console: one line per logged step, reported through Ray Train (no TTY here).
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train: step ")]
    assert [ln.split()[2] for ln in lines] == ["1/6", "2/6", "3/6"], lines
    for part in ("loss ", "coord ", "cls ", "lr ", "images/s", "data wait ", "ETA "):
        assert part in lines[-1], (part, lines[-1])
    from mlflow import MlflowClient

    assert MlflowClient(tracking_uri).get_run(first.run_id).info.status == "RUNNING"  # stopped, not ended

    second = run_train(cfg, shards, SmallTree(), [[1.0, 1.0], [3.0, 3.0]], out)
    _check_no_training_actor_left()
    assert second.run_id == first.run_id  # the same MLflow run continues
    assert second.step == 6 and second.metrics["seen"] == 6 * 4  # no step repeated, none skipped
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train: step ")]
    assert [ln.split()[2] for ln in lines] == ["4/6", "5/6", "6/6"], lines
    assert lines[-1].endswith("ETA 0s")
    # The data position continued too: 6 batches into the first epoch of each stream, not 3.
    import torch

    worker = torch.load(Path(second.checkpoint_uri) / "worker_0.pt", weights_only=False)
    assert worker["position"] == {"det": {"epoch": 0, "batch": 6}, "cls": {"epoch": 0, "batch": 6}}
    uri = tracking_uri
    assert _history(uri, first.run_id, "resumed_from_step") == [(0, 0.0), (3, 3.0)]
    losses = _history(uri, first.run_id, "loss_total")
    assert [s for s, _ in losses] == list(range(1, 7))
    assert all(np.isfinite(v) for _, v in losses)
    # The lr of each step is the schedule's value for that step, across the resume.
    lrs = _history(uri, first.run_id, "lr")
    assert [s for s, _ in lrs] == list(range(1, 7))
    assert [v for _, v in lrs] == pytest.approx([learning_rate(s - 1, cfg.train) for s in range(1, 7)])
    run = MlflowClient(uri).get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tree_hash"] == "test-tree-6"
    # The step's compute type is on the run: bf16 where this CPU has it natively (train.amp is on).
    with open("/proc/cpuinfo") as f:
        native_bf16 = any(w in ("avx512_bf16", "amx_bf16") for line in f if line.startswith("flags") for w in line.split())
    assert cfg.train.amp and run.data.tags["precision"].startswith("bf16 (" if native_bf16 else "fp32 (")
    assert run.data.params["train.max_steps"] == "6"
    # Lineage: both shard directories as training inputs, digest = their manifest fingerprint.
    from pipelines.manifest import read_manifest

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"synth-detection", "synth-classification"}
    det = inputs["synth-detection"]
    assert det.dataset.digest == read_manifest(shards[0]).inputs_fingerprint
    assert json.loads(det.dataset.profile) == {"num_rows": 16}
    assert json.loads(det.dataset.source) == {"uri": shards[0]}
    assert [(t.key, t.value) for t in det.tags] == [("mlflow.data.context", "training")]
    assert "box_nodes" in det.dataset.schema
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(first.run_id, "predictions")}
    assert artifacts == {"predictions/step_0000003.png", "predictions/step_0000006.png"}
    assert {a.path for a in MlflowClient(uri).list_artifacts(first.run_id)} >= {"config.yaml", "anchors.json"}
    # Complete: a third call does not train again.
    third = run_train(cfg, shards, SmallTree(), [[1.0, 1.0], [3.0, 3.0]], out)
    assert third.skipped and third.step == 6


# Actors a training run starts (Ray Train's controller and workers, the dataset manager and one
# Ray Data split coordinator per stream): all must end with the run.
RUN_ACTORS = ("TrainController", "TrainWorker", "DatasetManager", "SplitCoordinator")
# What an idle Ray actor process spends (its core-worker threads; measured ~0.6% of a core) is
# far below this; a split coordinator still running its execution spends 25-60% of a core.
IDLE_CPU_FRACTION = 0.05


def _alive_actors() -> dict[str, tuple[str, int]]:
    import ray

    return {aid: (a["ActorClassName"], a["Pid"]) for aid, a in ray._private.state.actors().items()
            if a["State"] == "ALIVE"}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc; None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check_no_training_actor_left(idle_window_s: float = 3.0) -> None:
    """After run_train returns: the run's actors end (within seconds), and every actor still
    alive (Ray Data's cluster-wide stats and autoscaling actors) is idle over a window in which
    this process, like an evaluation stage after training, goes on without training."""
    deadline = time.monotonic() + 30
    while True:
        left = sorted({(name, pid) for name, pid in _alive_actors().values() if any(k in name for k in RUN_ACTORS)})
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"training actors still alive after run_train returned: {left}"
    alive = _alive_actors().values()
    before = {(name, pid): _cpu_seconds(pid) for name, pid in alive}
    time.sleep(idle_window_s)
    spent = {k: _cpu_seconds(k[1]) - c for k, c in before.items() if c is not None and _cpu_seconds(k[1]) is not None}
    busy = {k: round(v / idle_window_s, 3) for k, v in spent.items() if v > IDLE_CPU_FRACTION * idle_window_s}
    assert not busy, f"Ray actors spending CPU after training (fraction of a core): {busy}"


def _train_worker_pids() -> list[int]:
    import ray

    return [a["Pid"] for a in ray._private.state.actors().values()
            if "TrainWorker" in a["ActorClassName"] and a["State"] == "ALIVE"]


def test_killed_worker_resumes_from_last_checkpoint(cluster, shards, tmp_path, tracking_uri):
    from pipelines.train.stage import run_train

    # log_every = checkpoint_every: one Ray Train report per two steps, as many as checkpoints alone need.
    cfg = _cfg(tmp_path, tracking_uri, "train.num_workers=2", "train.max_steps=16", "train.checkpoint_every=2", "train.log_every=2",
               "train.max_failures=1", "train.steps=[100]", "train.scales=[0.1]")
    out = tmp_path / "train" / "ft"
    killed: dict[str, int] = {}

    def kill_after_first_checkpoint() -> None:
        # A checkpoint counts once Ray's checkpoint manager snapshot names it.
        snapshot = out / "checkpoint_manager_snapshot.json"
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"]
            except (OSError, ValueError, KeyError, TypeError):
                latest = 0
            pids = _train_worker_pids()
            if latest >= 2 and pids:
                killed["pid"], killed["latest"] = pids[-1], latest
                os.kill(pids[-1], signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = run_train(cfg, shards, SmallTree(), None, str(out))
    killer.join(timeout=5)
    assert "pid" in killed, "the worker was not killed: the test did not exercise a failure"
    assert result.step == 16
    # Images seen are restored from the checkpoint and counted on: no step counted twice.
    assert result.metrics["seen"] == 16 * 4 * 2
    uri = tracking_uri
    resumed = [int(v) for _, v in _history(uri, result.run_id, "resumed_from_step")]
    assert len(resumed) == 2 and resumed[0] == 0, "expected one restart"
    # The restart began at the latest checkpoint there was when the worker died: nothing lost
    # beyond the checkpoint interval.
    assert resumed[1] >= killed["latest"] and resumed[1] % 2 == 0 and resumed[1] < 16
    assert {s for s, _ in _history(uri, result.run_id, "loss_total")} == set(range(2, 17, 2))


def test_fast_yolo_trains_on_flat_classes_and_its_log_windows_do_not_wait(cluster, shards, tmp_path, tracking_uri,
                                                                         monkeypatch, capsys):
    """YOLOv1 through Ray Train: detection images only, darknet's detection loss, flat classes.

    And progress goes to the driver's queue, not through ray.train.report: a report waits for the
    controller's poll (here every 3 s), which held training to one log window per poll (issue 20).
    One run checks both: each Ray Train run costs ~30 s here, however few its steps."""

    from pipelines.inference import Detector
    from pipelines.job import adapt_config_to_model
    from pipelines.train.checkpoint import read_checkpoint
    from pipelines.train.loop import build_model
    from pipelines.train.stage import run_train

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")  # read by the controller of this run
    cfg = _cfg(tmp_path, tracking_uri, "model.name=fast_yolo", "model.width=0.125", "train.max_steps=5", "train.steps=[1]",
               "train.scales=[0.1]", "train.checkpoint_every=5", "train.eval_every=5", "eval.draw_images=2")
    notes = adapt_config_to_model(cfg)
    assert cfg.train.mode == "detect" and not cfg.train.multiscale and notes
    result = run_train(cfg, shards[:1], SmallTree(), None, str(tmp_path / "train" / "v1"), flat_classes=[1, 2])
    assert result.step == 5
    uri = tracking_uri
    for part in ("coord", "obj", "noobj", "cls"):  # the region loss's parts, from the detection loss
        values = [v for _, v in _history(uri, result.run_id, f"loss_{part}")]
        assert len(values) == 5 and all(np.isfinite(values)) and max(values) > 0, part
    assert [v for _, v in _history(uri, result.run_id, "boxes_unmapped")] == [0] * 5
    # A line per step on the driver's console, and no window waited for the controller's poll:
    # each is one step of a tiny model (well under a second); waiting made it 3 s.
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train: step ")]
    assert [ln.split()[2] for ln in lines] == [f"{s}/5" for s in range(1, 6)], lines
    window_s = [cfg.train.batch_size / v for _, v in _history(uri, result.run_id, "images_per_s")]
    assert len(window_s) == 5 and max(window_s[1:]) < 1.5, window_s
    assert {v for _, v in _history(uri, result.run_id, "input_size")} == {64.0}  # no multi-scale
    from mlflow import MlflowClient

    assert {a.path for a in MlflowClient(uri).list_artifacts(result.run_id, "predictions")} == \
        {"predictions/step_0000005.png"}  # the preview grid through the v1 decode
    state, _ = read_checkpoint(result.checkpoint_uri, 0)
    model = build_model(cfg.model, cfg.train, None, None, [1, 2])
    model.load_state_dict(state["model"])
    assert model.num_classes == 2 and model.net.width == 64
    (dets,) = Detector(model, thresh=0.0)([Image.new("RGB", (80, 60), (200, 40, 40))])
    assert len(dets.scores) > 0 and dets.boxes.shape[1] == 4
