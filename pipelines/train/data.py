"""The training data path: Parquet shards -> Ray Data -> decoded, augmented, padded batches.

Decoding and augmentation run in ``map_batches`` on Ray's CPU workers, so only fixed-size
uint8 images (at the largest multi-scale size) and padded box tensors reach the object store
and the training workers, never raw JPEGs to be decoded next to the GPU. Each training
worker reads its own streams through ``ray.train.get_dataset_shard``: ``det`` (detection
rows) and ``cls`` (classification rows); :class:`JointBatches` draws ``n_det`` and ``n_cls``
rows from them for every step (the ratio is ``train.det_fraction``: oversampling detection
data, as the paper does with COCO) and resizes the whole batch to the step's input size.

Multi-scale sizes are a function of (seed, step) only (:func:`multiscale_size`), so every
worker picks the same size without communicating and a resumed run picks the sizes the
interrupted one would have picked.
"""

from __future__ import annotations

import io
import math
import os
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

# torch is imported inside the functions that use it: Ray Data's coordinator actors unpickle
# decode_augment by reference and so import this module, and torch's import (~2 s of CPU on this
# machine) in each of them is time taken from the training workers on a small machine.
if TYPE_CHECKING:
    import torch

from pipelines.config import TrainConfig
from pipelines.errors import PipelineError
from pipelines.shards import CLASSIFICATION, DETECTION, KIND_COLUMNS, TRAIN_COLUMNS, shard_files

# Darknet keeps at most 30 truth boxes per image (region_layer.c); later ones are cut.
MAX_BOXES = 30
# Darknet's augmentation settings from the yolov2 / yolo9000 cfgs.
AUGMENT = {"jitter": 0.2, "hue": 0.1, "saturation": 1.5, "exposure": 1.5, "flip": True}
# The number of final steps darknet trains at the largest size, capped for short runs.
FINAL_STEPS_AT_MAX = 200
# A stream whose epoch is shorter than this many micro-batches reads several epochs in one pass (one
# Ray Data execution), at most MAX_EPOCHS_PER_PASS (see stream_passes).
MIN_STEPS_PER_PASS = 500
MAX_EPOCHS_PER_PASS = 64
# Rows per decode + augment call (``map_batches``).
DECODE_BATCH = 16
# Decoded images per block of a training stream (see training_datasets).
BLOCK_ROWS = 64
# The training streams and the shard rows (``kind``) each one reads.
STREAM_KIND = {"det": DETECTION, "cls": CLASSIFICATION}


class ShardDataError(PipelineError):
    """A shard row that cannot be trained on; the message names the image and field."""


def multiscale_size(step: int, tcfg: TrainConfig) -> int:
    """The input size for optimizer step ``step``: identical on every worker.

    A new size from multiscale_min..multiscale_max (multiples of 32) every
    ``multiscale_every`` steps, drawn from a generator seeded with (seed, step block), and
    the largest size for the final steps (darknet: the last 200 iterations; here at most a
    tenth of the run so that short demo runs keep multi-scale).
    """
    if not tcfg.multiscale:
        return tcfg.input_size
    final = min(FINAL_STEPS_AT_MAX, tcfg.max_steps // 10)
    if step >= tcfg.max_steps - final:
        return tcfg.multiscale_max
    block = step // tcfg.multiscale_every
    rng = np.random.default_rng([tcfg.seed, block])
    lo, hi = tcfg.multiscale_min // 32, tcfg.multiscale_max // 32
    return int(rng.integers(lo, hi + 1)) * 32


def canvas_size(tcfg: TrainConfig) -> int:
    """The size images are decoded and augmented to: the largest size any step uses."""
    return tcfg.multiscale_max if tcfg.multiscale else tcfg.input_size


def pad_boxes(
    boxes: Sequence[Sequence[Sequence[float]]], labels: Sequence[Sequence[int]], max_boxes: int = MAX_BOXES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack per-image box lists into (N, M, 4) float32 and (N, M) int32 with label -1 as padding.

    Returns (boxes, labels, cut) where cut[i] counts the boxes of image i beyond ``max_boxes``
    (kept out, as darknet does, and reported rather than dropped silently).
    """
    n = len(boxes)
    out_b = np.zeros((n, max_boxes, 4), np.float32)
    out_l = np.full((n, max_boxes), -1, np.int32)
    cut = np.zeros(n, np.int32)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        k = min(len(b), max_boxes)
        cut[i] = len(b) - k
        if k:
            out_b[i, :k] = np.asarray(b[:k], np.float32).reshape(k, 4)
            out_l[i, :k] = np.asarray(lab[:k], np.int32)
    return out_b, out_l, cut


def _row_error(image_id: str, field: str, problem: str) -> ShardDataError:
    return ShardDataError(f"shard row image_id={image_id!r}, field '{field}': {problem}")


def decode_augment(batch: pa.Table, size: int, seed: int) -> dict[str, np.ndarray]:
    """``map_batches`` function: JPEG bytes + boxes -> uint8 (N, size, size, 3) and padded boxes.

    Augmentation draws from a generator seeded with the image id and fresh entropy: a new
    augmentation every epoch, independent of which Ray worker decodes the row. Runs at idle CPU
    priority (:func:`_idle_priority`).
    """
    with _idle_priority():
        return _decode_augment(batch, size, seed)


@contextmanager
def _idle_priority() -> Iterator[None]:
    """The calling thread at Linux's SCHED_IDLE while inside: it runs on CPU no other thread
    wants. Ray Data decodes a stream's whole pass ahead of training when it can (half the object
    store per stream); on a node where the training worker shares the cores, the burst of decode
    tasks took CPU from it (the demo's first ~160 steps at ~55 images/s against ~100 after, issue
    20). Where SCHED_IDLE is missing or refused, the decode runs as before."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        before = None
    try:
        yield
    finally:
        if before is not None:
            with suppress(OSError):  # unprivileged: a thread may not leave SCHED_IDLE; it stays there
                os.sched_setscheduler(0, *before)


def _decode_augment(batch: pa.Table, size: int, seed: int) -> dict[str, np.ndarray]:
    import torch
    from PIL import Image, UnidentifiedImageError

    from yolo_core.transforms import augment as yolo_augment

    ids = batch.column("image_id").to_pylist()
    images = batch.column("image").to_pylist()
    boxes_in = batch.column("boxes").to_pylist()
    nodes_in = batch.column("box_nodes").to_pylist()
    image_node = batch.column("image_node").to_pylist()
    kinds = batch.column("kind").to_pylist()
    entropy = np.random.SeedSequence().entropy
    out_img = np.empty((len(ids), size, size, 3), np.uint8)
    boxes_out: list[list[list[float]]] = []
    nodes_out: list[list[int]] = []
    lost = np.zeros(len(ids), np.int32)
    for i, image_id in enumerate(ids):
        if not images[i]:
            raise _row_error(image_id, "image", "empty image bytes")
        try:
            img = Image.open(io.BytesIO(images[i]))
            img = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise _row_error(image_id, "image", f"not a decodable image ({e})") from None
        b = np.asarray(boxes_in[i] or [], np.float32).reshape(-1, 4)
        nodes = list(nodes_in[i] or [])
        if len(nodes) != len(b):
            raise _row_error(image_id, "box_nodes", f"{len(nodes)} labels for {len(b)} boxes")
        if kinds[i] == DETECTION and any(n < 0 for n in nodes):
            raise _row_error(image_id, "box_nodes", f"negative node index in {nodes}")
        if kinds[i] == CLASSIFICATION and (image_node[i] is None or image_node[i] < 0):
            raise _row_error(image_id, "image_node", f"classification row without a label node ({image_node[i]})")
        rng = np.random.default_rng([seed, zlib.crc32(image_id.encode()), entropy])
        a = yolo_augment(img, torch.from_numpy(b), size, rng=rng, **AUGMENT)
        b = a.boxes.numpy()
        nodes = [nodes[k] for k in a.kept.tolist()]
        lost[i] = a.dropped
        out_img[i] = (a.image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
        boxes_out.append(b.tolist())
        nodes_out.append(nodes)
    pb, pl, cut = pad_boxes(boxes_out, nodes_out)
    label = np.asarray([n if k == CLASSIFICATION else -1 for n, k in zip(image_node, kinds)], np.int64)
    return {"image": out_img, "boxes": pb, "labels": pl, "image_label": label, "cut_boxes": cut + lost}


@dataclass(frozen=True)
class ShardRows:
    """Rows per ``kind`` in each part file of the shard directories (files in directory order)."""

    by_file: dict[str, dict[str, int]]

    @property
    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.by_file.values():
            for kind, n in counts.items():
                out[kind] = out.get(kind, 0) + n
        return out


def count_rows(shard_uris: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> ShardRows:
    """Rows per ``kind`` in each part file (reads only that column)."""
    import pyarrow.parquet as pq

    from pipelines import storage

    files = shard_files(shard_uris, storage_options)
    if not files:
        raise ShardDataError(f"shard directories {[storage.redact_uri(u) for u in shard_uris]}: no part files")
    by_file: dict[str, dict[str, int]] = {}
    for f in files:
        with _reading(f):
            fs, path = storage.filesystem(f, storage_options)
            kinds = pq.read_table(path, columns=KIND_COLUMNS, filesystem=fs)["kind"].to_pylist()
        counts = by_file.setdefault(f, {})
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    return ShardRows(by_file)


@contextmanager
def _reading(uri: str) -> Iterator[None]:
    """A shard file that cannot be read (missing, truncated, not Parquet) as a ShardDataError naming it."""
    from pipelines import storage

    try:
        yield
    except (OSError, pa.ArrowException) as e:
        raise ShardDataError(f"shard file {storage.redact_uri(uri)}: cannot be read "
                             f"({storage.redact_uri(str(e))})") from None


def count_kinds(shard_uris: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Rows per ``kind`` over the shard directories (reads only that column)."""
    return count_rows(shard_uris, storage_options).by_kind


def check_rows(shard_uris: Sequence[str], tcfg: TrainConfig,
               storage_options: Mapping[str, Any] | None = None) -> ShardRows:
    """Fail before starting workers when a stream the mode needs cannot fill one batch per worker;
    return the rows per file and ``kind``."""
    from pipelines import storage

    rows = count_rows(shard_uris, storage_options)
    have = rows.by_kind
    for name, n in batch_split(tcfg).items():
        need = n * tcfg.num_workers
        if have.get(STREAM_KIND[name], 0) < need:
            where = ", ".join(storage.redact_uri(u) for u in shard_uris)
            raise ShardDataError(
                f"train.mode={tcfg.mode} needs at least {need} '{STREAM_KIND[name]}' rows ({n} per micro-batch x "
                f"{tcfg.num_workers} workers); the shards ({where}) hold {have.get(STREAM_KIND[name], 0)}")
    return rows


@dataclass(frozen=True)
class StreamPass:
    """What one pass (one Ray Data execution) over a stream's rows holds: ``epochs`` repetitions of
    the shard rows, cut at ``rows`` when the pass covers the rest of the run (None: not cut)."""

    epochs: int
    rows: int | None


def stream_passes(rows_by_kind: Mapping[str, int], tcfg: TrainConfig) -> dict[str, StreamPass]:
    """The pass of each stream: about as many rows as training takes from it, and no more.

    Every pass over a Ray Dataset starts a new streaming execution, and the first batches of a
    pass wait for it (seconds: measured 40-70% data wait in the steps around each restart on the
    demo). So a stream whose epoch lasts fewer than ``MIN_STEPS_PER_PASS`` micro-batches reads
    its rows several times in one pass: enough epochs for the whole run (at most
    ``MAX_EPOCHS_PER_PASS``), each with its own augmentation. When that covers the run, the pass
    is cut at exactly the rows the run trains on (micro-batches x rows per micro-batch x workers),
    so Ray Data decodes no image that is not trained on, and never reads ahead past the last step.
    Each stream is sized on its own rows (a shared epoch count, set by the smaller stream, made
    the classification stream decode ~6x what it trained on). A stream whose epoch already lasts
    ``MIN_STEPS_PER_PASS`` micro-batches (ImageNet-sized shards) is read one epoch per pass.
    """
    micro_batches = tcfg.max_steps * tcfg.subdivisions
    out = {}
    for name, n in batch_split(tcfg).items():
        rows = max(1, rows_by_kind.get(STREAM_KIND[name], 0))
        per_micro = n * tcfg.num_workers
        need = micro_batches * per_micro
        long_epoch = rows >= MIN_STEPS_PER_PASS * per_micro
        epochs = 1 if long_epoch else min(math.ceil(need / rows), MAX_EPOCHS_PER_PASS)
        out[name] = StreamPass(epochs, need if epochs * rows >= need else None)
    return out


@dataclass(frozen=True)
class ReadPiece:
    """One read task of a stream's pass: the first ``rows`` rows of one kind in ``file``, in epoch ``epoch``."""

    file: str
    epoch: int
    rows: int


def plan_pass(rows: ShardRows, kind: str, p: StreamPass, seed: int) -> list[ReadPiece]:
    """The read tasks of one pass over a stream, in order: ``p.epochs`` epochs, each over the files
    in one order shuffled with ``seed`` (the same in every epoch and pass, so a resumed worker can
    skip what it trained on), cut after ``p.rows`` rows when set (rows past the cut are never read)."""
    import random

    files = [f for f, counts in rows.by_file.items() if counts.get(kind, 0) > 0]
    random.Random(seed).shuffle(files)
    left = p.rows
    pieces = []
    for epoch in range(p.epochs):
        for f in files:
            n = rows.by_file[f][kind] if left is None else min(rows.by_file[f][kind], left)
            pieces.append(ReadPiece(f, epoch, n))
            if left is not None:
                left -= n
                if left == 0:
                    return pieces
    return pieces


def read_piece(piece: ReadPiece, kind: str, seed: int, storage_options: Mapping[str, Any] | None) -> Iterator[pa.Table]:
    """The rows of one read task: the training columns of the file's ``kind`` rows in an order
    shuffled with (``seed``, epoch, file name), the first ``piece.rows`` of them.

    Shuffled here, at the source: the training iterator's local shuffle buffer mixes only the
    blocks it holds, and ingest writes rows class by class. With Ray's 128 MB blocks the buffer
    held ~850 images, more than an epoch of the demo's streams; with blocks of ``BLOCK_ROWS`` it
    would mix a few classes at a time (measured on the demo: unseen mAP@.5 0.33 -> 0.25-0.29).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines import storage

    with _reading(piece.file), storage.open_uri(piece.file, "rb", storage_options) as f:
        table = pq.read_table(f, columns=TRAIN_COLUMNS)
    table = table.filter(pc.equal(table["kind"], kind))
    if table.num_rows < piece.rows:
        raise ShardDataError(f"shard file {storage.redact_uri(piece.file)}: {table.num_rows} '{kind}' rows, "
                             f"{piece.rows} when training started: the shards changed under a running training")
    name = piece.file.rstrip("/").rsplit("/", 1)[-1]
    order = np.random.default_rng([seed, piece.epoch, zlib.crc32(name.encode())]).permutation(table.num_rows)
    table = table.take(order[: piece.rows])
    for start in range(0, table.num_rows, BLOCK_ROWS):
        yield table.slice(start, BLOCK_ROWS)


def _shard_source(pieces: Sequence[ReadPiece], kind: str, seed: int, storage_options: Mapping[str, Any] | None):
    """A Ray Data source with one read task per piece, in the pieces' order."""
    import functools

    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class TrainShards(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            return [ReadTask(functools.partial(read_piece, piece, kind, seed, storage_options),
                             BlockMetadata(num_rows=piece.rows, size_bytes=None, exec_stats=None, input_files=None),
                             per_task_row_limit=per_task_row_limit)
                    for piece in pieces]

    return TrainShards()


def training_datasets(shard_uris: Sequence[str], tcfg: TrainConfig, storage_options: Mapping[str, Any] | None = None,
                      passes: Mapping[str, StreamPass] | None = None, rows: ShardRows | None = None) -> dict[str, Any]:
    """The mode's streams (lazy Ray Datasets): rows of one kind, sized by ``passes`` (see
    :func:`stream_passes`; default one epoch each), decoded and augmented, in blocks of about
    ``BLOCK_ROWS`` images. ``rows``: the shards' row counts when already read (:func:`check_rows`)."""
    import ray.data
    from ray.data import DataContext

    from pipelines.train.executor_idle import IdleBackoff

    rows = rows or count_rows(shard_uris, storage_options)
    size = canvas_size(tcfg)
    out = {}
    ctx = DataContext.get_current()
    before = ctx.custom_execution_callback_classes, ctx.target_max_block_size
    # A Dataset keeps the context it was created in: these streams' executors wait rather than
    # spin while nothing of theirs runs (executor_idle.py), and their blocks hold BLOCK_ROWS
    # decoded images: a stream's first batch waits for its first whole block (Ray's default 128 MB
    # held ~2,700 128-px images, the train benchmark's first ~30 s, issue 20).
    ctx.custom_execution_callback_classes = [*before[0], IdleBackoff]
    ctx.target_max_block_size = BLOCK_ROWS * size * size * 3
    try:
        for name in batch_split(tcfg):
            kind = STREAM_KIND[name]
            pieces = plan_pass(rows, kind, (passes or {}).get(name, StreamPass(1, None)), tcfg.seed)
            ds = ray.data.read_datasource(_shard_source(pieces, kind, tcfg.seed, storage_options),
                                          override_num_blocks=max(1, len(pieces)))
            out[name] = ds.map_batches(decode_augment, batch_format="pyarrow", batch_size=DECODE_BATCH,
                                       fn_kwargs={"size": size, "seed": tcfg.seed})
    finally:
        ctx.custom_execution_callback_classes, ctx.target_max_block_size = before
    return out


def stream_cpu_limits(tcfg: TrainConfig, data_cpus: float) -> dict[str, float]:
    """The CPUs each stream's Ray Data execution may use: one each, and what ``data_cpus`` holds
    beyond that in proportion to the rows each stream supplies per step.

    Why a limit per stream: each stream is its own Ray Data execution, and Ray Data's autoscaling
    coordinator hands the cluster's CPUs to executions in the order they asked. Unlimited, the
    classification stream (stalled behind its full buffer while training waits for detection
    rows) kept every data CPU, and the detection stream's next pass got 0 and never produced a
    row (2 cores, det_fraction .75). Capped, every stream's request fits beside the others'.
    """
    split = batch_split(tcfg)
    total, spare = sum(split.values()), max(0.0, data_cpus - len(split))
    return {name: 1.0 + spare * n / total for name, n in split.items()}


def cpus_needed(tcfg: TrainConfig) -> float:
    """The fewest CPUs a training run holds: its workers' and one per data stream."""
    return tcfg.num_workers * tcfg.cpus_per_worker + len(batch_split(tcfg))


def batch_split(tcfg: TrainConfig) -> dict[str, int]:
    """Rows per micro-batch from each stream: det_fraction of the batch is detection rows."""
    micro = tcfg.batch_size // tcfg.subdivisions
    if tcfg.mode == "detect":
        return {"det": micro}
    if tcfg.mode == "classify":
        return {"cls": micro}
    n_det = min(micro, max(1, round(micro * tcfg.det_fraction))) if tcfg.det_fraction > 0 else 0
    return {k: v for k, v in {"det": n_det, "cls": micro - n_det}.items() if v > 0}


class _Stream:
    """Endless batches from one dataset shard, pass after pass, with a resumable position.

    ``epoch`` counts passes over the dataset (a pass may hold several epochs of small shards,
    see :func:`stream_passes`); ``batch`` counts the batches trained on in the current pass."""

    def __init__(self, it: Any, batch_size: int, seed: int, epoch: int = 0, batch: int = 0) -> None:
        self.it, self.batch_size, self.seed = it, batch_size, seed
        self.epoch, self.batch = epoch, batch
        self._gen = self._batches()
        self._first: Future | None = None  # the first batch, being fetched (see start)

    def start(self, pool: ThreadPoolExecutor) -> None:
        """Fetch the first batch in ``pool`` now: starts the stream's Ray Data execution while
        the caller does other work."""
        self._first = pool.submit(next, self._gen)

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        skip = self.batch  # on resume, the batches of this epoch already trained on
        while True:
            n = 0
            batches = iter(self.it.iter_torch_batches(
                batch_size=self.batch_size, drop_last=True, device="cpu", prefetch_batches=8,
                local_shuffle_buffer_size=4 * self.batch_size, local_shuffle_seed=self.seed + self.epoch,
            ))
            try:
                for b in batches:
                    n += 1
                    if skip:
                        skip -= 1
                        continue
                    self.batch += 1
                    yield b
            finally:
                # Ends this worker's part of the pass now (also when training stops mid-pass): Ray
                # Data's split coordinator stops its execution once every worker has ended its part.
                getattr(batches, "close", lambda: None)()
            if n == 0:
                raise ShardDataError(f"a training stream has fewer rows than one batch ({self.batch_size}) "
                                     "on this worker: add data or lower train.batch_size")
            self.epoch, self.batch, skip = self.epoch + 1, 0, 0

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._first is not None:
            first, self._first = self._first, None
            return first.result()
        return next(self._gen)

    def close(self) -> None:
        if self._first is not None:  # the generator cannot close while the pool's thread runs it
            wait([self._first])
        self._gen.close()


class JointBatches:
    """Micro-batches mixing the streams in fixed counts; ``position`` is what a checkpoint saves."""

    def __init__(self, iterators: Mapping[str, Any], counts: Mapping[str, int], seed: int,
                 position: Mapping[str, Mapping[str, int]] | None = None) -> None:
        position = position or {}
        self.streams = {
            name: _Stream(iterators[name], n, seed + 7919 * i, **dict(position.get(name, {})))
            for i, (name, n) in enumerate(counts.items())
        }
        self.wait_s = 0.0  # time spent waiting for data since the last reset
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> JointBatches:
        """Start every stream now, side by side, fetching its first batch in a thread: a stream's
        first batch waits seconds for its Ray Data execution to start (coordinator, read and
        decode tasks, their imports). Drawn one after another on the first step, the streams'
        start-ups added up (issue 20: ~9 s before the train benchmark's first step, ~4 s with
        the streams side by side and the model built meanwhile)."""
        self._pool = ThreadPoolExecutor(len(self.streams), thread_name_prefix="first-batch")
        for s in self.streams.values():
            s.start(self._pool)
        return self

    def close(self) -> None:
        """Stop reading: the streams' Ray Data executions end instead of filling buffers nobody reads."""
        for s in self.streams.values():
            s.close()
        if self._pool is not None:
            self._pool.shutdown()

    def position(self) -> dict[str, dict[str, int]]:
        return {k: {"epoch": s.epoch, "batch": s.batch} for k, s in self.streams.items()}

    def next(self, size: int) -> dict[str, torch.Tensor]:
        """The next micro-batch resized to ``size``: image float (B, 3, size, size) in [0, 1]."""
        import torch

        t0 = time.perf_counter()
        parts = [next(s) for s in self.streams.values()]
        self.wait_s += time.perf_counter() - t0
        batch = {k: torch.cat([p[k] for p in parts]) for k in ("image", "boxes", "labels", "image_label", "cut_boxes")}
        batch["image"] = resize_images(batch["image"], size)
        batch["labels"] = batch["labels"].long()
        batch["image_label"] = batch["image_label"].long()
        return batch


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, size, size) in [0, 1]; boxes are fractions, unchanged.

    The result is channels_last in memory (the rows' own layout, kept through the resize): the
    training step's layout. Converting it to NCHW and back cost ~6 of a demo step's ~160 ms."""
    import torch
    import torch.nn.functional as F

    x = images.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)
