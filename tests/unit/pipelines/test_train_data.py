"""Training data path: multi-scale schedule, box padding, joint batching and its position."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.config import TrainConfig
from pipelines.shards import write_committed
from pipelines.train.data import (
    MAX_BOXES,
    JointBatches,
    batch_split,
    canvas_size,
    cpus_needed,
    multiscale_size,
    pad_boxes,
    resize_images,
)


def test_multiscale_is_a_function_of_step_and_seed():
    t = TrainConfig(max_steps=10_000, multiscale_min=320, multiscale_max=608, multiscale_every=10, seed=3)
    sizes = [multiscale_size(s, t) for s in range(2000)]
    # The same call on another "worker" (a fresh call, nothing shared) gives the same sizes.
    assert sizes == [multiscale_size(s, TrainConfig(**vars(t))) for s in range(2000)]
    assert all(320 <= s <= 608 and s % 32 == 0 for s in sizes)
    # Constant inside each block of 10 steps, and every size of the range is used.
    for b in range(200):
        assert len(set(sizes[b * 10:(b + 1) * 10])) == 1
    assert set(sizes) == set(range(320, 609, 32))
    # Another seed gives another sequence.
    other = TrainConfig(**{**vars(t), "seed": 4})
    assert sizes != [multiscale_size(s, other) for s in range(2000)]


def test_multiscale_final_steps_and_off():
    t = TrainConfig(max_steps=300, multiscale_min=192, multiscale_max=320)
    assert all(multiscale_size(s, t) == 320 for s in range(270, 300))  # the last tenth at the largest
    assert len({multiscale_size(s, t) for s in range(0, 270)}) > 1
    fixed = TrainConfig(multiscale=False, input_size=256)
    assert {multiscale_size(s, fixed) for s in range(100)} == {256}
    assert canvas_size(t) == 320 and canvas_size(fixed) == 256


def test_pad_boxes_pads_with_minus_one_and_counts_cut_boxes():
    boxes = [[[0.5, 0.5, 0.2, 0.3]], [], [[0.1, 0.2, 0.1, 0.1]] * (MAX_BOXES + 3)]
    labels = [[7], [], list(range(MAX_BOXES + 3))]
    b, lab, cut = pad_boxes(boxes, labels)
    assert b.shape == (3, MAX_BOXES, 4) and lab.shape == (3, MAX_BOXES)
    assert lab[0, 0] == 7 and (lab[0, 1:] == -1).all()
    np.testing.assert_allclose(b[0, 0], [0.5, 0.5, 0.2, 0.3])
    assert (lab[1] == -1).all() and (b[1] == 0).all()
    assert list(lab[2]) == list(range(MAX_BOXES))  # the first 30 are kept, as in darknet
    assert list(cut) == [0, 0, 3]


@pytest.mark.parametrize("mode,frac,expected", [
    ("joint", 0.5, {"det": 8, "cls": 8}),
    ("joint", 0.2, {"det": 3, "cls": 13}),
    ("joint", 0.0, {"cls": 16}),
    ("joint", 1.0, {"det": 16}),
    ("detect", 0.2, {"det": 16}),
    ("classify", 0.2, {"cls": 16}),
])
def test_batch_split(mode, frac, expected):
    assert batch_split(TrainConfig(mode=mode, det_fraction=frac, batch_size=16)) == expected


def test_batch_split_uses_micro_batches():
    assert batch_split(TrainConfig(mode="joint", det_fraction=0.25, batch_size=64, subdivisions=8)) == {"det": 2, "cls": 6}


def test_resize_images_to_step_size():
    img = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    x = resize_images(img, 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    same = resize_images(img, 64)
    assert torch.equal(same, img.permute(0, 3, 1, 2).float() / 255)
    # The step's layout, channels_last, with the values of the NCHW resize.
    for y in (x, same):
        assert y.is_contiguous(memory_format=torch.channels_last)
    plain = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2).contiguous().float() / 255, size=(32, 32),
                                            mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, plain, rtol=0, atol=1e-6)


def _stream(ray, n: int, kind: str, start: int):
    """Already-decoded rows as map_batches would emit them; row ids go in image_label."""
    rows = {
        "image": np.zeros((n, 8, 8, 3), np.uint8),
        "boxes": np.zeros((n, MAX_BOXES, 4), np.float32),
        "labels": np.full((n, MAX_BOXES), -1, np.int32),
        "image_label": np.arange(start, start + n, dtype=np.int64),
        "cut_boxes": np.zeros(n, np.int32),
    }
    if kind == "det":
        rows["labels"][:, 0] = 1
    return ray.data.from_items([{k: v[i] for k, v in rows.items()} for i in range(n)])


@pytest.fixture
def ordered(ray_local):
    """Deterministic row order, as the trainer's data config asks for (see stage.run_train)."""
    ctx = ray_local.data.DataContext.get_current()
    old = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    yield ray_local
    ctx.execution_options.preserve_order = old


def test_joint_batches_mix_streams_and_resume_position(ordered):
    ray_local = ordered
    det = _stream(ray_local, 10, "det", 0)
    cls = _stream(ray_local, 12, "cls", 100)
    counts = {"det": 2, "cls": 3}
    jb = JointBatches({"det": det.iterator(), "cls": cls.iterator()}, counts, seed=0)
    seen = []
    for _ in range(7):  # 7 steps: det wraps after 5 batches, cls after 4
        b = jb.next(16)
        assert b["image"].shape == (5, 3, 16, 16)
        assert (b["labels"][:2, 0] == 1).all() and (b["labels"][2:] == -1).all()
        seen.append(b["image_label"].tolist())
    assert jb.position() == {"det": {"epoch": 1, "batch": 2}, "cls": {"epoch": 1, "batch": 3}}
    # Each epoch of the det stream covers its rows once.
    first_epoch_det = [i for s in seen[:5] for i in s[:2]]
    assert sorted(first_epoch_det) == list(range(10))
    # A new reader restored at the saved position continues with the rest of the epoch.
    resumed = JointBatches({"det": det.iterator(), "cls": cls.iterator()}, counts, seed=0, position=jb.position())
    nxt = resumed.next(16)
    assert resumed.position() == {"det": {"epoch": 1, "batch": 3}, "cls": {"epoch": 1, "batch": 4}}
    expected = jb.next(16)
    assert nxt["image_label"].tolist() == expected["image_label"].tolist()


def test_started_streams_fetch_their_first_batches_side_by_side(ordered):
    """JointBatches.start: every stream's first batch is fetched before the first step asks (the
    loop starts the streams, then builds the model), the batches are the same, and a stream's
    error surfaces at the step that needs it."""
    from concurrent.futures import wait

    from pipelines.train.data import ShardDataError

    def streams():
        return {"det": _stream(ordered, 10, "det", 0).iterator(), "cls": _stream(ordered, 12, "cls", 100).iterator()}

    counts = {"det": 2, "cls": 3}
    plain = JointBatches(streams(), counts, seed=0)
    started = JointBatches(streams(), counts, seed=0).start()
    first = [s._first for s in started.streams.values()]
    assert not wait(first, timeout=120).not_done  # fetched with no step asking
    for _ in range(6):  # past the end of both streams' first pass
        assert started.next(16)["image_label"].tolist() == plain.next(16)["image_label"].tolist()
    assert started.position() == plain.position()
    started.close()
    plain.close()
    tiny = JointBatches({"det": _stream(ordered, 1, "det", 0).iterator()}, {"det": 2}, seed=0).start()
    with pytest.raises(ShardDataError, match="fewer rows than one batch"):
        tiny.next(16)
    tiny.close()


def _shard_table(rows: list[dict]):
    """Rows as training reads them: the shard schema's training columns."""
    import pyarrow as pa

    from pipelines.shards import SHARD_SCHEMA, TRAIN_COLUMNS

    return pa.Table.from_pylist(rows, schema=pa.schema([SHARD_SCHEMA.field(c) for c in TRAIN_COLUMNS]))


def _jpeg(w: int, h: int, box_px: tuple[int, int, int, int] | None = None) -> bytes:
    import io

    from PIL import Image

    img = np.full((h, w, 3), 128, np.uint8)
    if box_px:
        x0, y0, x1, y1 = box_px
        img[y0:y1, x0:x1] = (250, 10, 10)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_decode_augment_outputs_fixed_size_tensors_and_follows_boxes(monkeypatch):
    from types import SimpleNamespace

    from pipelines.train import data
    from pipelines.train.data import decode_augment

    # One fixed augmentation draw: with fresh entropy ~2% of draws (hue shift, desaturation and
    # darkening together) leave the red square under the redness bar below.
    monkeypatch.setattr(data.np.random, "SeedSequence", lambda: SimpleNamespace(entropy=0))

    table = _shard_table([
        {"image_id": "coco/1", "kind": "detection", "image": _jpeg(80, 60, (20, 15, 60, 45)),
         "boxes": [[0.5, 0.5, 0.5, 0.5]], "box_nodes": [4], "image_node": -1},
        {"image_id": "imagenet/2", "kind": "classification", "image": _jpeg(50, 70), "boxes": [],
         "box_nodes": [], "image_node": 9},
    ])
    out = decode_augment(table, size=64, seed=0)
    assert out["image"].shape == (2, 64, 64, 3) and out["image"].dtype == np.uint8
    assert out["boxes"].shape == (2, MAX_BOXES, 4) and list(out["image_label"]) == [-1, 9]
    assert out["labels"][0, 0] == 4 and (out["labels"][0, 1:] == -1).all() and (out["labels"][1] == -1).all()
    # The red square is where the transformed box says (the box follows jitter, flip and placement);
    # HSV jitter changes its shade but not that red dominates, and grey stays grey.
    cx, cy, w, h = out["boxes"][0, 0]
    x0, x1 = int((cx - w / 2) * 64) + 2, int((cx + w / 2) * 64) - 2
    y0, y1 = int((cy - h / 2) * 64) + 2, int((cy + h / 2) * 64) - 2
    img = out["image"][0].astype(int)
    redness = img[..., 0] - img[..., 1]
    assert (redness[y0:y1, x0:x1] > 60).mean() > 0.9
    outside = np.ones((64, 64), bool)
    outside[max(0, y0 - 6):y1 + 6, max(0, x0 - 6):x1 + 6] = False
    assert (np.abs(redness[outside]) < 30).mean() > 0.95


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling policies only")
def test_decoding_runs_at_idle_priority_and_gives_it_back(monkeypatch):
    """decode_augment runs its work at SCHED_IDLE (the training worker sharing the cores keeps its
    CPU while a stream decodes ahead) and the thread's policy is as before afterwards, also when
    the decode raises."""
    from pipelines.train import data

    seen = []

    def record(*args):
        seen.append(os.sched_getscheduler(0))
        if len(seen) == 2:
            raise data.ShardDataError("bad row")
        return {}

    monkeypatch.setattr(data, "_decode_augment", record)
    assert data.decode_augment(None, 32, 0) == {}
    with pytest.raises(data.ShardDataError):
        data.decode_augment(None, 32, 0)
    assert seen == [os.SCHED_IDLE, os.SCHED_IDLE]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_decode_augment_names_the_bad_row_and_field():
    from pipelines.train.data import ShardDataError, decode_augment

    bad = _shard_table([{"image_id": "coco/7", "kind": "detection", "image": b"not a jpeg",
                         "boxes": [], "box_nodes": [], "image_node": -1}])
    with pytest.raises(ShardDataError, match=r"image_id='coco/7', field 'image': not a decodable image"):
        decode_augment(bad, size=32, seed=0)
    mismatch = _shard_table([{"image_id": "coco/8", "kind": "detection", "image": _jpeg(32, 32),
                              "boxes": [[0.5, 0.5, 0.2, 0.2]], "box_nodes": [], "image_node": -1}])
    with pytest.raises(ShardDataError, match=r"image_id='coco/8', field 'box_nodes': 0 labels for 1 boxes"):
        decode_augment(mismatch, size=32, seed=0)
    unlabeled = _shard_table([{"image_id": "imagenet/3", "kind": "classification", "image": _jpeg(32, 32),
                               "boxes": [], "box_nodes": [], "image_node": -1}])
    with pytest.raises(ShardDataError, match=r"image_id='imagenet/3', field 'image_node'"):
        decode_augment(unlabeled, size=32, seed=0)
    assert ShardDataError.user_facing


def _six_detection_rows(tmp_path: Path) -> Path:
    """A committed shard directory of six detection rows (image bytes not decodable)."""
    d = tmp_path / "shards" / "coco-train"
    d.mkdir(parents=True)
    rows = [{"image_id": f"coco/{i}", "kind": "detection", "image": b"x", "boxes": [], "box_nodes": [],
             "image_node": -1} for i in range(6)]
    write_committed(str(d), [_shard_table(rows)])
    return d


def test_check_rows_refuses_a_mode_the_shards_cannot_feed(tmp_path):
    from pipelines.train.data import ShardDataError, check_rows, count_kinds

    d = _six_detection_rows(tmp_path)
    assert count_kinds([str(d)]) == {"detection": 6}
    rows = check_rows([str(d)], TrainConfig(mode="detect", batch_size=4, num_workers=1))
    assert rows.by_kind == {"detection": 6}
    assert list(rows.by_file.values()) == [{"detection": 6}] and next(iter(rows.by_file)).endswith(".parquet")
    with pytest.raises(ShardDataError, match=r"needs at least 8 'detection' rows .* hold 6"):
        check_rows([str(d)], TrainConfig(mode="detect", batch_size=4, num_workers=2))
    with pytest.raises(ShardDataError, match=r"train.mode=joint needs at least 2 'classification' rows.*coco-train"):
        check_rows([str(d)], TrainConfig(mode="joint", batch_size=4, det_fraction=0.5))


def test_an_unreadable_shard_file_is_named(tmp_path):
    from pipelines.train.data import ReadPiece, ShardDataError, check_rows, read_piece

    d = _six_detection_rows(tmp_path)
    part = next(d.glob("*.parquet"))
    good = part.read_bytes()
    part.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ShardDataError, match=rf"shard file {part}: cannot be read"):
        check_rows([str(d)], TrainConfig(mode="detect", batch_size=4, num_workers=1))
    with pytest.raises(ShardDataError, match=rf"shard file {part}: cannot be read"):
        list(read_piece(ReadPiece(str(part), 0, 6), "detection", 0, None))
    part.write_bytes(good)
    with pytest.raises(ShardDataError, match=r"6 'detection' rows, 8 when training started"):
        list(read_piece(ReadPiece(str(part), 0, 8), "detection", 0, None))
    part.unlink()
    with pytest.raises(ShardDataError, match=rf"shard file {part}: cannot be read"):
        check_rows([str(d)], TrainConfig(mode="detect", batch_size=4, num_workers=1))


def test_each_stream_pass_holds_what_the_run_trains_on():
    """A pass (one Ray Data execution) of a small stream holds several epochs so that it does not
    restart every few steps, but each stream is sized on its own rows and cut at the rows the run
    trains on: the images decoded are the images trained on."""
    from pipelines.train.data import MAX_EPOCHS_PER_PASS, MIN_STEPS_PER_PASS, StreamPass, stream_passes

    # The demo's mix: 12 detection + 4 classification rows a step, 1200 steps.
    demo = TrainConfig(mode="joint", batch_size=16, det_fraction=0.75, num_workers=1, max_steps=1200)
    rows = {"detection": 240, "classification": 608}
    p = stream_passes(rows, demo)
    assert p == {"det": StreamPass(60, 1200 * 12), "cls": StreamPass(8, 1200 * 4)}  # not 60 epochs of 608
    assert sum(s.rows for s in p.values()) == demo.max_steps * demo.batch_size * demo.num_workers
    two = TrainConfig(**{**vars(demo), "num_workers": 2, "subdivisions": 2})  # 6 + 2 a micro-batch, x 2
    assert stream_passes(rows, two) == {"det": StreamPass(64, None), "cls": StreamPass(16, 1200 * 2 * 2 * 2)}
    # A run longer than MAX_EPOCHS_PER_PASS epochs: full passes, not cut.
    assert stream_passes({"detection": 3, "classification": 3}, demo)["det"] == StreamPass(MAX_EPOCHS_PER_PASS, None)
    # Large shards: one epoch per pass, cut when the run is shorter than an epoch.
    big = MIN_STEPS_PER_PASS * 12
    assert stream_passes({"detection": big, "classification": 10**7}, demo) == {
        "det": StreamPass(1, None), "cls": StreamPass(1, 1200 * 4)}


def test_a_pass_decodes_only_the_rows_trained_on(tmp_path, ray_local):
    """Counted, not timed: train-like reading of a tiny run (JointBatches over the streams of
    training_datasets, sized by stream_passes) ends its passes at the last step, and Ray Data's
    decode operator saw exactly the rows trained on (it used to decode whole shared-epoch passes)."""
    from pipelines.train.data import stream_passes, training_datasets

    d = tmp_path / "shards" / "mixed"
    d.mkdir(parents=True)
    rows = [{"image_id": f"{k}/{i}", "kind": kind, "image": _jpeg(40, 32, (4, 4, 20, 20)),
             "boxes": [[0.1, 0.1, 0.6, 0.8]] if kind == "detection" else [],
             "box_nodes": [0] if kind == "detection" else [], "image_node": -1 if kind == "detection" else 0}
            for k, kind, n in (("d", "detection", 10), ("c", "classification", 30)) for i in range(n)]
    write_committed(str(d), [_shard_table(rows)])
    t = TrainConfig(mode="joint", batch_size=4, det_fraction=0.75, multiscale=False, input_size=32, max_steps=7)
    passes = stream_passes({"detection": 10, "classification": 30}, t)
    assert passes["det"].epochs == 3 and passes["cls"].epochs == 1  # 21 and 7 rows are trained on
    streams = training_datasets([str(d)], t, passes=passes)
    batches = JointBatches({k: ds.iterator() for k, ds in streams.items()}, batch_split(t), seed=0)
    for _ in range(t.max_steps):
        assert batches.next(32)["image"].shape == (4, 3, 32, 32)
    assert batches.position() == {"det": {"epoch": 0, "batch": 7}, "cls": {"epoch": 0, "batch": 7}}
    batches.close()
    # A whole pass of each stream: the rows trained on, and the decode step saw no others.
    for name, trained in (("det", 21), ("cls", 7)):
        assert sum(len(b["image_label"]) for b in streams[name].iter_batches(batch_size=None)) == trained
        stats = streams[name].stats()
        assert _decoded_rows(stats) == trained, stats


def test_streams_carry_the_idle_backoff_and_leave_the_global_context_alone(tmp_path, ray_local):
    from ray.data import DataContext

    from pipelines.train.data import training_datasets
    from pipelines.train.executor_idle import IdleBackoff

    d = tmp_path / "shards" / "det"
    d.mkdir(parents=True)
    rows = [{"image_id": f"d/{i}", "kind": "detection", "image": _jpeg(40, 32, (4, 4, 20, 20)),
             "boxes": [[0.1, 0.1, 0.6, 0.8]], "box_nodes": [0], "image_node": -1} for i in range(8)]
    write_committed(str(d), [_shard_table(rows)])
    t = TrainConfig(mode="detect", batch_size=4, multiscale=False, input_size=32, max_steps=2)
    ds = training_datasets([str(d)], t)["det"]
    assert IdleBackoff in ds.context.custom_execution_callback_classes
    assert IdleBackoff not in DataContext.get_current().custom_execution_callback_classes


def test_stream_executors_sleep_only_when_nothing_of_theirs_runs(monkeypatch):
    """IdleBackoff, the training streams' execution callback: Ray Data's control loop waits in
    ray.wait only while a task runs; held back with none running it looped without pause (the
    demo's split coordinator took ~75% of a core beside training, issue 20)."""
    from types import SimpleNamespace

    from pipelines.train import executor_idle
    from pipelines.train.executor_idle import IdleBackoff

    slept = []
    monkeypatch.setattr(executor_idle.time, "sleep", slept.append)
    class Op:  # what the callback reads of Ray's physical operators; a topology is keyed by them
        def __init__(self, n: int) -> None:
            self.num_active_tasks = lambda: n

    op = Op
    IdleBackoff().on_execution_step(SimpleNamespace(_topology={op(0): None, op(2): None}))
    assert slept == []  # a task runs: ray.wait already paces the loop
    IdleBackoff().on_execution_step(SimpleNamespace(_topology={op(0): None, op(0): None}))
    assert slept == [executor_idle.IDLE_SLEEP_S]
    IdleBackoff().on_execution_step(SimpleNamespace())  # another Ray without the field: unchanged
    assert slept == [executor_idle.IDLE_SLEEP_S]


def test_a_pass_reads_epoch_after_epoch_in_one_shuffled_file_order():
    from pipelines.train.data import ReadPiece, ShardRows, StreamPass, plan_pass

    rows = ShardRows({"a": {"detection": 5, "classification": 2}, "b": {"classification": 3}, "c": {"detection": 4}})
    pieces = plan_pass(rows, "detection", StreamPass(3, None), seed=0)
    order = [p.file for p in pieces[:2]]
    assert sorted(order) == ["a", "c"]  # b holds no detection rows: no read task
    assert [(p.file, p.epoch) for p in pieces] == [(f, e) for e in range(3) for f in order]
    assert {p.file: p.rows for p in pieces} == {"a": 5, "c": 4}
    orders = {tuple(p.file for p in plan_pass(rows, "detection", StreamPass(1, None), seed=s)) for s in range(10)}
    assert orders == {("a", "c"), ("c", "a")}  # the seed shuffles the files
    # Cut at 12 rows: epoch 0 whole (9 rows), then 3 rows of epoch 1's first file; nothing after.
    cut = plan_pass(rows, "detection", StreamPass(3, 12), seed=0)
    assert [p.file for p in cut[:2]] == order and cut[2] == ReadPiece(order[0], 1, 3) and len(cut) == 3


def test_a_read_task_takes_its_kind_shuffled_per_epoch_and_stops_at_its_rows(tmp_path):
    from pipelines.train.data import BLOCK_ROWS, ReadPiece, read_piece

    d = tmp_path / "shards" / "mixed"
    d.mkdir(parents=True)
    rows = [{"image_id": f"{kind[0]}/{i}", "kind": kind, "image": b"x", "boxes": [], "box_nodes": [], "image_node": 0}
            for i in range(150) for kind in ("detection", "classification")]
    write_committed(str(d), [_shard_table(rows)])
    f = str(next(d.glob("*.parquet")))

    def ids(epoch: int, n: int, kind: str, seed: int = 0) -> list[str]:
        tables = list(read_piece(ReadPiece(f, epoch, n), kind, seed, None))
        assert all(t.num_rows <= BLOCK_ROWS for t in tables)
        return [i for t in tables for i in t["image_id"].to_pylist()]

    whole = ids(0, 150, "detection")
    assert sorted(whole) == sorted(f"d/{i}" for i in range(150)) and whole != [f"d/{i}" for i in range(150)]
    assert ids(0, 150, "detection") == whole  # the same order for the same seed and epoch (a resume)
    assert ids(1, 150, "detection") != whole and ids(0, 150, "detection", seed=1) != whole
    cut = ids(2, 120, "classification")
    assert len(set(cut)) == 120 and all(i.startswith("c/") for i in cut) and cut == ids(2, 150, "classification")[:120]


def test_streams_come_in_small_blocks_epoch_after_epoch(tmp_path, ray_local):
    """A stream's first batch waits for its first whole block: blocks of about BLOCK_ROWS decoded
    images, not Ray's default 128 MB (~2,700 128-px images, issue 20); each epoch of a pass reads
    every file once, in the same file order, in the order the read tasks were planned."""
    from ray.data import DataContext

    from pipelines.train import data

    d = tmp_path / "shards" / "det"
    d.mkdir(parents=True)
    tables = [_shard_table([{"image_id": f"{part}/{i}", "kind": "detection", "image": _jpeg(40, 32, (4, 4, 20, 20)),
                             "boxes": [[0.1, 0.1, 0.6, 0.8]], "box_nodes": [0], "image_node": -1}
                            for i in range(100)]) for part in ("p", "q")]
    write_committed(str(d), tables)
    t = TrainConfig(mode="detect", batch_size=4, multiscale=False, input_size=32, max_steps=2)
    ds = data.training_datasets([str(d)], t, passes={"det": data.StreamPass(2, None)})["det"]
    sizes = [len(b["image_label"]) for b in ds.iter_batches(batch_size=None)]
    assert sum(sizes) == 400 and max(sizes) <= data.BLOCK_ROWS + data.DECODE_BATCH, sizes

    pieces = data.plan_pass(data.count_rows([str(d)]), "detection", data.StreamPass(2, None), seed=t.seed)
    ctx = DataContext.get_current()
    ordered = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # as training reads (stage._ordered_ingest)
    try:
        import ray.data

        ids = [r["image_id"] for r in ray.data.read_datasource(data._shard_source(pieces, "detection", t.seed, None)).take_all()]
    finally:
        ctx.execution_options.preserve_order = ordered
    # Epoch after epoch: each epoch reads the files in one order, each file's rows shuffled anew.
    first, second = ids[:100], ids[100:200]
    assert len({i.split("/")[0] for i in first}) == 1 and sorted(first + second) == sorted(
        f"{p}/{i}" for p in "pq" for i in range(100))
    assert [i.split("/")[0] for i in ids[200:]] == [i.split("/")[0] for i in ids[:200]] and ids[200:] != ids[:200]
    assert sorted(ids[200:]) == sorted(ids[:200])


def _decoded_rows(stats: str) -> int:
    """Rows out of the decode operator (one per row in) in a dataset's last execution, from Ray
    Data's stats text."""
    import re

    m = re.search(r"Operator \d+ [^\n]*decode_augment[^\n]*\n(?:[^\n]*\n)*?[^\n]*Output num rows per block: "
                  r"[^\n]*?(\d+) total", stats)
    assert m, stats
    return int(m.group(1))


def test_stream_cpu_limits_one_each_then_by_rows_per_step():
    from pipelines.train.data import stream_cpu_limits

    joint = TrainConfig(mode="joint", batch_size=16, det_fraction=0.75)
    assert stream_cpu_limits(joint, 2) == {"det": 1.0, "cls": 1.0}
    assert stream_cpu_limits(joint, 6) == {"det": 4.0, "cls": 2.0}
    assert stream_cpu_limits(joint, 1) == {"det": 1.0, "cls": 1.0}  # never below one: the stage checks
    assert stream_cpu_limits(TrainConfig(mode="detect", batch_size=16), 3.0) == {"det": 3.0}


def test_a_stalled_stream_does_not_starve_the_other(tmp_path, ray_local):
    """The joint streams are two Ray Data executions. One stalled behind a full buffer (training
    waits on the other) must not keep the other from running its next passes: each stream's CPUs
    are capped (as run_train does through DataConfig), so both fit in the cluster (on 2 cores,
    det_fraction .75, the detection stream's second pass used to get 0 CPUs for ever)."""
    import threading

    from pipelines.train.data import stream_cpu_limits, training_datasets
    from pipelines.train.stage import _ordered_ingest

    d = tmp_path / "shards" / "mixed"
    d.mkdir(parents=True)
    rows = [{"image_id": f"{k}/{i}", "kind": kind, "image": _jpeg(64, 48, (8, 8, 40, 40)),
             "boxes": [[0.1, 0.1, 0.6, 0.8]] if kind == "detection" else [],
             "box_nodes": [0] if kind == "detection" else [], "image_node": -1 if kind == "detection" else 0}
            for k, kind in (("d", "detection"), ("c", "classification")) for i in range(48)]
    write_committed(str(d), [_shard_table(rows)])
    t = TrainConfig(mode="joint", batch_size=8, det_fraction=0.75, multiscale=False, input_size=64)
    streams = training_datasets([str(d)], t)
    assert set(streams) == {"det", "cls"}
    for name, cpus in stream_cpu_limits(t, 2).items():
        streams[name].context.execution_options = _ordered_ingest(cpus)
    cls_batches = iter(streams["cls"].iter_batches(batch_size=2, prefetch_batches=4))
    assert len(next(cls_batches)["image"]) == 2  # started, then left stalled
    passes: list[int] = []

    def detection_passes() -> None:
        for _ in range(3):
            passes.append(sum(len(b["image"]) for b in streams["det"].iter_batches(batch_size=6)))

    worker = threading.Thread(target=detection_passes, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert passes == [48, 48, 48]
    assert len(next(cls_batches)["image"]) == 2  # and the stalled one goes on where it was


def test_training_refuses_a_cluster_with_no_cpu_left_for_a_stream(ray_local):
    from pipelines.errors import StageError
    from pipelines.train.stage import _stream_cpu_limits

    with pytest.raises(StageError, match=r"the cluster has 2 CPUs; .* so 3 are needed.*ray.num_cpus"):
        _stream_cpu_limits(TrainConfig(mode="joint", num_workers=1))
    assert _stream_cpu_limits(TrainConfig(mode="detect", num_workers=1)) == {"det": 1.0}
    # Explicit: taken as given (an autoscaling cluster grows to it).
    assert _stream_cpu_limits(TrainConfig(mode="joint", num_workers=2, data_cpus=4)) == {"det": 2.0, "cls": 2.0}


def test_local_ray_holds_what_the_job_will_run():
    """A local Ray is sized from what its caller will run: the job's training need when training
    is among its stages (1 worker + one CPU per data stream), the machine's cores otherwise;
    ray.num_cpus overrides both. (Which size `y9k ingest` / `y9k run` actually start is checked
    on a real instance in tests/integration/test_full_pipeline.py.)"""
    import os

    from pipelines import dag, job
    from pipelines.config import RayConfig, load_config
    from pipelines.stages import local_cpus

    cores = os.cpu_count()
    demo, detect = load_config("demo"), load_config("demo", ["train.mode=detect"])
    everything = job.build_stages()
    assert job.cpus_needed(demo, everything) == cpus_needed(demo.train) == 3
    assert job.cpus_needed(detect, everything) == 2
    assert job.cpus_needed(demo, dag.select(everything, ["ingest", "anchors"], None)) == 0
    assert local_cpus(RayConfig(), job.cpus_needed(demo, everything)) == max(cores, 3)
    assert local_cpus(RayConfig(), job.cpus_needed(detect, everything)) == max(cores, 2)
    assert local_cpus(RayConfig(), 0) == cores
    assert local_cpus(RayConfig(num_cpus=7), 99) == 7


def test_local_ray_quiets_the_state_api_poller_through_ray_trains_logging_setup():
    """The local instance has no dashboard, so Ray Train's placement-group cleaner fails to reach
    the State API every second and warns each time (~400 lines over `make demo`). The module its
    workers preload (pipelines/worker_logs.py) keeps its errors only, and must survive Ray Train's logging setup, whose
    dictConfig resets the levels of the loggers below "ray.train" (a level set there was lost).
    In a fresh interpreter, as in a worker: dictConfig would reconfigure this one's logging."""
    import subprocess
    import sys

    script = """
import logging, logging.config
from pipelines.worker_logs import STATE_API_POLLERS, quiet_state_api_pollers
logger = logging.getLogger(STATE_API_POLLERS[0])
quiet_state_api_pollers()
quiet_state_api_pollers()  # once per worker process, idempotent all the same
assert len(logger.filters) == 1, logger.filters
logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                           "handlers": {"out": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
                           "loggers": {"ray.train": {"level": "DEBUG", "handlers": ["out"]}}})
assert logger.level == logging.NOTSET  # what Ray Train's setup does to a level
logger.warning("Failed to query Ray Train Controller actor state.")
logger.error("Failed to clean up placement group")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[3])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["Failed to clean up placement group"], res.stdout


def test_the_data_module_imports_without_torch():
    # Ray Data's coordinator actors import this module to unpickle decode_augment; torch's import
    # there is CPU taken from the training workers (see the module's comment). A fresh interpreter,
    # because this test process has imported torch long ago.
    import subprocess
    import sys

    code = ("import sys, pipelines.train.data as d; d.decode_augment; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]", out.stdout
