"""Finding 3: an interrupted ingest is never read as if complete.

A shard directory is committed by its manifest, written last; every command that reads shards
(evaluate, train, anchors) goes through pipelines.shards.shard_files, which refuses a directory
without one with one line that says to rerun ingest, before any work (Ray is not started).

The states an ingest passes through before its commit are built here cheaply (the directory just
created, N parts written, a part half-written under its temporary name, everything but the
manifest); tests/integration/test_interrupted_ingest.py kills a real `y9k ingest` with SIGKILL.
"""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from pipelines import manifest
from pipelines.cli import main
from pipelines.shards import SHARD_SCHEMA, write_committed


def _part(n: int) -> pa.Table:
    rows = [{"image_id": f"imagenet_det/val/{i}", "dataset": "imagenet_det", "split": "val", "kind": "detection",
             "source_uri": "x", "image": b"\xff\xd8", "orig_width": 64, "orig_height": 48, "width": 64,
             "height": 48, "boxes": [[0.5, 0.5, 0.2, 0.2]], "box_nodes": [1], "box_labels": ["n02085620"],
             "image_node": -1, "image_label": ""} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


def interrupted_states(tmp_path) -> dict[str, str]:
    """shard directory per point of an ingest killed before its commit."""
    complete = tmp_path / "complete" / "shards" / "imagenet_det-val"
    write_committed(str(complete), [_part(3), _part(2), _part(4)])
    states = {}
    started = tmp_path / "started" / "shards" / "imagenet_det-val"
    started.mkdir(parents=True)
    states["directory created"] = started
    for n in (1, 2):
        d = tmp_path / f"{n}-parts" / "shards" / "imagenet_det-val"
        d.mkdir(parents=True)
        for part in sorted(complete.glob("part-*.parquet"))[:n]:
            shutil.copy(part, d)
        states[f"{n} parts written"] = d
    half = tmp_path / "half" / "shards" / "imagenet_det-val"
    shutil.copytree(states["1 parts written"], half)
    (half / "part-00001.parquet.tmp-1a2b3c4d").write_bytes(b"PAR1\0\0")  # write_stream's temporary name
    states["a part half-written"] = half
    nomanifest = tmp_path / "all-but-manifest" / "shards" / "imagenet_det-val"
    shutil.copytree(complete, nomanifest)
    (nomanifest / manifest.MANIFEST_NAME).unlink()
    states["all parts, no manifest"] = nomanifest
    return {k: str(v) for k, v in states.items()}


COMMANDS = {
    "evaluate": lambda d, tmp: ["evaluate", "--shards", d, "--model", str(tmp / "no-model"), "--out", str(tmp / "ev")],
    "train": lambda d, tmp: ["train", "--shards", d, "--out", str(tmp / "tr")],
    "anchors": lambda d, tmp: ["anchors", "--shards", d, "--out", str(tmp / "an")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_shard_reader_refuses_an_interrupted_ingest(tmp_path, capsys, command):
    for state, shard_dir in interrupted_states(tmp_path).items():
        rc = main([*COMMANDS[command](shard_dir, tmp_path), "--set", f"storage.root={tmp_path / 'root'}"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("y9k")]
        assert rc == 1 and "Traceback" not in err, (state, err)
        assert lines == [f"y9k: error: {shard_dir}: no manifest.json: not an ingest output, or an interrupted run; "
                         "run `y9k ingest` again"], (state, err)
        for out in ("ev", "tr", "an"):  # nothing written, nothing logged
            assert not (tmp_path / out).exists(), (state, out)
