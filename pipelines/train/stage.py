"""The `train` stage: build a Ray Train ``TorchTrainer`` from the config and run it.

    result = run_train(cfg, shards=[".../shards/coco-train", ".../shards/imagenet-train"],
                       tree=wordtree, anchors=[[w, h], ...], out_uri=".../train/demo")

``out_uri`` is the run's storage path (local or ``s3://...``): Ray Train writes the
checkpoints there (``checkpoint_<step>/``), and calling ``run_train`` again with the same
``out_uri`` resumes from the latest one (Ray restores its checkpoint manager from that
directory), continuing the step counter, the lr schedule and the same MLflow run (its id is
kept in ``mlflow_run.json`` and in every checkpoint). A finished run (manifest with the same
config hash) is not trained again. While it trains, the driver's console shows the step, loss,
lr, images/s, data wait and ETA every ``train.log_every`` steps (pipelines/train/progress.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines import manifest, storage
from pipelines.config import Config
from pipelines.errors import StageError
from pipelines.lineage import TRAINING, log_shard_inputs
from pipelines.shards import DETECTION, PREVIEW_COLUMNS, shard_files
from pipelines.train.data import (
    ShardRows,
    StreamPass,
    batch_split,
    check_rows,
    cpus_needed,
    stream_cpu_limits,
    stream_passes,
    training_datasets,
)
from pipelines.train.loop import train_loop_per_worker
from pipelines.train.progress import TrainProgress
from pipelines.train.tracking import create_run, end_run
from wordtree_build.tree import WordTree

log = logging.getLogger("y9k.train")

RUN_FILE = "mlflow_run.json"


@dataclass
class TrainResult:
    out_uri: str
    run_id: str | None
    step: int
    checkpoint_uri: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def _tree_payload(tree: WordTree | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The tree as plain lists for the workers, and its tags."""
    if tree is None:
        return None, {}
    parents = [int(p) for p in tree.parents]
    return {"parents": parents}, {"tree_nodes": str(len(parents)), "tree_hash": tree.content_hash()}


def preview_images(shards: Sequence[str], count: int, storage_options: dict[str, Any]) -> list[bytes]:
    """JPEG bytes of the first ``count`` detection rows: the fixed images whose predictions are
    drawn at every evaluation interval."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: list[bytes] = []
    for f in shard_files(shards, storage_options):
        fs, path = storage.filesystem(f, storage_options)
        table = pq.read_table(path, columns=PREVIEW_COLUMNS, filesystem=fs)
        table = table.filter(pc.equal(table["kind"], DETECTION))
        out.extend(table["image"].to_pylist()[: count - len(out)])
        if len(out) >= count:
            return out
    return out


def _run_id(experiment: str, out_uri: str, tracking_uri: str, tags: dict[str, str],
            opts: dict[str, Any] | None) -> str:
    """The MLflow run of this training run: created once, reused by every resume."""
    run_file = storage.join(out_uri, RUN_FILE)
    if storage.exists(run_file, opts):
        return storage.read_json(run_file, opts)["run_id"]
    name = out_uri.rstrip("/").rsplit("/", 1)[-1]
    run_id = create_run(tracking_uri, experiment, f"train-{name}", {"stage": "train", **tags})
    storage.write_json(run_file, {"run_id": run_id, "tracking_uri": storage.redact_uri(tracking_uri)}, opts)
    return run_id


def _storage_filesystem(uri: str, options: dict[str, Any]):
    """A pyarrow filesystem for Ray Train when fsspec options (endpoint, keys) are configured."""
    if not options or not storage.is_remote(uri):
        return None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(storage.filesystem(uri, options)[0]))


# Ray Train's record of a run directory's checkpoints (the latest one is what a run resumes from).
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"


@dataclass
class TrainPlan:
    """What :func:`run_train` would do with a config, shards and run directory (``y9k train --dry-run``)."""

    mode: str
    shards: list[str]
    out_uri: str
    finished: manifest.Manifest | None = None  # the record of a finished run of this model + train config
    has_checkpoint: bool = False  # otherwise: Ray Train resumes from the directory's latest checkpoint
    resume_step: int | None = None  # that checkpoint's step, when its record says
    rows: ShardRows | None = None
    passes: dict[str, StreamPass] = field(default_factory=dict)
    cpu_limits: dict[str, float] = field(default_factory=dict)

    @property
    def complete_step(self) -> int | None:
        return None if self.finished is None else int(self.finished.counts.get("step", 0))

    def describe(self) -> list[str]:
        """The lines training logs as it starts (each after "train: ")."""
        lines = [f"{self.mode} mode on {', '.join(storage.redact_uri(s) for s in self.shards)}"]
        if self.rows is not None:
            per_pass = {k: f"{p.epochs} epoch(s)" + (f", cut at {p.rows} rows" if p.rows is not None else "")
                        for k, p in self.passes.items()}
            lines += [f"rows {self.rows.by_kind}; per pass over each stream: {per_pass}",
                      f"CPUs per data stream: {self.cpu_limits or 'set by the cluster when training starts'}"]
        return lines


def plan_train(cfg: Config, shards: Sequence[str], out_uri: str) -> TrainPlan:
    """Read what training would start from, without starting Ray: whether the run directory is
    complete for this config, its latest checkpoint, and the streams' rows and passes (a stream
    that cannot fill a batch raises :class:`ShardDataError` here, as training would)."""
    t, opts = cfg.train, cfg.storage.options
    out_uri = storage.normalize(out_uri)
    plan = TrainPlan(t.mode, list(shards), out_uri)
    done = manifest.read_manifest(out_uri, opts)
    if done is not None and done.config_hash == cfg.hash("model", "train"):
        plan.finished = done
        return plan
    plan.rows = check_rows(plan.shards, t, opts)
    plan.passes = stream_passes(plan.rows.by_kind, t)
    plan.cpu_limits = _planned_cpu_limits(cfg)
    snapshot = storage.join(out_uri, CHECKPOINT_SNAPSHOT)
    if storage.exists(snapshot, opts):
        plan.has_checkpoint = True
        with contextlib.suppress(KeyError, TypeError, ValueError):
            plan.resume_step = int(storage.read_json(snapshot, opts)["latest_checkpoint_result"]["metrics"]["step"])
    return plan


def _planned_cpu_limits(cfg: Config) -> dict[str, float]:
    """The streams' CPU limits: from the connected cluster, else from the local instance `y9k
    train` would start (``pipelines.stages.local_cpus``); empty when a cluster address is set but
    Ray is not connected (a dry run does not connect: the cluster decides at start)."""
    import ray

    from pipelines.stages import local_cpus

    t = cfg.train
    if t.data_cpus > 0 or ray.is_initialized():
        return _stream_cpu_limits(t)
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return {}
    return _stream_cpu_limits(t, local_cpus(cfg.ray, cpus_needed(t)))


def run_train(cfg: Config, shards: Sequence[str], tree: WordTree | None, anchors: Sequence[Sequence[float]] | None,
              out_uri: str, stop_after: int | None = None, flat_classes: Sequence[int] | None = None) -> TrainResult:
    """Train (or resume) on the shard directories; ``stop_after`` ends this call at that step
    with a checkpoint (the schedule still spans ``train.max_steps``). ``flat_classes``: the
    tree node of each class of a YOLOv1 model (see ``pipelines.train.loop``).

    The whole config, not a few sections: the MLflow run records every setting (params and
    config.yaml), and training reads the train, model, eval (preview images), storage and mlflow
    sections. Start Ray first, as the job and `y9k train` do:
    ``ensure_ray(cfg.ray, cpus_needed(cfg.train))`` (pipelines.stages)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    t = cfg.train
    out_uri = storage.normalize(out_uri)
    opts = cfg.storage.options
    plan = plan_train(cfg, shards, out_uri)
    if (done := plan.finished) is not None:
        log.info("train: %s is complete (step %s), skipped", storage.redact_uri(out_uri), plan.complete_step)
        return TrainResult(out_uri, done.extra.get("run_id"), plan.complete_step,
                           done.extra.get("checkpoint_uri"), dict(done.extra.get("metrics", {})), skipped=True)
    for line in plan.describe():
        log.info("train: %s", line)
    tree_payload, tags = _tree_payload(tree)
    tracking_uri = cfg.mlflow.resolved_tracking_uri()
    run_id = _run_id(cfg.mlflow.experiment, out_uri, tracking_uri, tags, opts)
    log_shard_inputs(tracking_uri, run_id, list(shards), TRAINING, opts)
    parent, name = out_uri.rstrip("/").rsplit("/", 1)
    fs = _storage_filesystem(out_uri, opts)
    if fs is not None:  # with an explicit filesystem Ray wants the path inside it, no scheme
        parent = parent.split("://", 1)[1]
    # Rank 0 sends its log windows to this queue; the queue actor ends with the block, also on error.
    with TrainProgress(t.max_steps) as progress:
        loop_config = {
            "progress_queue": progress.queue, "cfg": cfg.to_dict(), "tree": tree_payload, "tags": tags,
            "run_id": run_id, "tracking_uri": tracking_uri, "stop_after": stop_after,
            "preview": preview_images(shards, cfg.eval.draw_images, opts) if t.eval_every and t.mode != "classify" else [],
            "anchors": [list(map(float, a)) for a in anchors] if anchors is not None else None,
            "flat_classes": [int(n) for n in flat_classes] if flat_classes is not None else None,
        }
        with _quiet_data_bars():  # the trainer copies the DataContext now, for the split coordinators
            trainer = TorchTrainer(
                train_loop_per_worker,
                train_loop_config=loop_config,
                torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
                scaling_config=ray.train.ScalingConfig(
                    num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker={"CPU": t.cpus_per_worker},
                ),
                run_config=ray.train.RunConfig(
                    name=name, storage_path=parent, storage_filesystem=fs,
                    failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                ),
                datasets=training_datasets(list(shards), t, opts, plan.passes, plan.rows),
                # Ordered streams: a resumed worker skips exactly the rows it had already trained on.
                # One worker reads each stream whole: no streaming_split, so no split-coordinator
                # actor per stream; the stream's executor runs in the training worker instead.
                dataset_config=ray.train.DataConfig(
                    datasets_to_split="all" if t.num_workers > 1 else [],
                    execution_options={k: _ordered_ingest(v) for k, v in plan.cpu_limits.items()}),
            )
        with _controller_poll(cfg.ray.train_poll_s):
            result = _fit(trainer)
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    step = int(metrics.get("step", 0))
    ckpt_uri = result.checkpoint.path if result.checkpoint is not None else None
    if ckpt_uri is not None and storage.is_remote(out_uri):
        ckpt_uri = f"{out_uri.split('://', 1)[0]}://{ckpt_uri}"
    if step >= t.max_steps:
        end_run(tracking_uri, run_id)
        manifest.commit(out_uri, manifest.Manifest(
            stage="train", inputs_fingerprint=manifest.fingerprint_uris(list(shards), opts),
            config_hash=cfg.hash("model", "train"),
            counts={"step": step}, extra={"run_id": run_id, "checkpoint_uri": ckpt_uri, "metrics": metrics},
        ), opts)
    return TrainResult(out_uri, run_id, step, ckpt_uri, metrics)


@contextlib.contextmanager
def _quiet_data_bars() -> Iterator[None]:
    """Ray Data's progress bars off for what is created inside (the training streams' split
    coordinators: their bars say nothing a user needs while the training line runs)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ctx.enable_progress_bars = before


@contextlib.contextmanager
def _controller_poll(seconds: float) -> Iterator[None]:
    """Ray Train's controller polls its workers every ``seconds`` for the fits started inside
    (``ray.train_poll_s``): the trainer passes the variable on to the controller it starts. A
    value the user set in the environment wins."""
    name = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    if name in os.environ:
        yield
        return
    os.environ[name] = f"{seconds:g}"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _fit(trainer: Any) -> Any:
    """``trainer.fit()``, its Ray actors ended with it, and a user-facing worker error as a StageError.

    Ray Train's ``fit`` installs a SIGINT handler whose closure holds the only handle to its
    ``TrainController`` actor, and leaves it installed: the controller, its ``DatasetManager`` and
    their Ray Data ``SplitCoordinator`` actors (owned, so they live as long as it does) would stay
    alive, each spending CPU, through everything the process does after training (evaluation,
    the next stage). Putting the previous handler back drops that handle, so Ray ends the
    controller and, by ownership, the actors it created.
    """
    restore_sigint = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if restore_sigint else None
    try:
        return trainer.fit()
    except Exception as e:  # the worker's own error says what was wrong with which row or file
        cause = _root_cause(e)
        if getattr(type(cause), "user_facing", False):
            raise StageError(f"train: {cause}") from e
        raise
    finally:
        if restore_sigint and previous is not None:  # None: a handler not installed from Python
            signal.signal(signal.SIGINT, previous)


def _stream_cpu_limits(t, total: float | None = None) -> dict[str, float]:
    """CPU limits of the data streams (see ``stream_cpu_limits``), checked against the cluster's
    CPUs (``total``; default: the connected cluster's now).

    With ``train.data_cpus`` unset the streams share what the training workers leave of the
    cluster, and it must hold one CPU per stream; an explicit value is taken as given (an
    autoscaling cluster grows to it)."""
    import ray

    if t.data_cpus > 0:
        return stream_cpu_limits(t, t.data_cpus)
    if total is None:
        total = ray.cluster_resources().get("CPU", 0)
    workers = t.num_workers * t.cpus_per_worker
    if total < cpus_needed(t):
        raise StageError(
            f"train: the cluster has {total:g} CPUs; the training workers take {workers:g} (train.num_workers x "
            f"train.cpus_per_worker) and each of the {len(batch_split(t))} data streams needs at least 1, so "
            f"{cpus_needed(t):g} are needed. Add CPUs (ray.num_cpus for a local instance, --num-cpus for "
            "`ray start`: logical CPUs may exceed the cores), lower the workers, or set train.data_cpus")
    return stream_cpu_limits(t, total - workers)


def _ordered_ingest(cpus: float):
    """Ray Train's default ingest options with the row order preserved and at most ``cpus`` CPUs."""
    import ray.train

    opts = ray.train.DataConfig.default_ingest_options()
    opts.preserve_order = True
    opts.resource_limits = opts.resource_limits.copy(cpu=cpus)
    return opts


def _root_cause(e: BaseException) -> BaseException:
    """The innermost error of a Ray failure chain (a worker's exception, when there is one)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = getattr(e, "cause", None) or getattr(e, "worker_failures", None) or e.__cause__
        if isinstance(nxt, dict):
            nxt = next(iter(nxt.values()), None)
        if nxt is None or not isinstance(nxt, BaseException):
            break
        e = nxt
    return e
