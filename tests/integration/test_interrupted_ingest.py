"""Finding 3 through the real path: `y9k ingest` in its own process, killed with SIGKILL (no
handler runs, as when a machine dies) once its first Parquet part is on disk; then every command
that reads shards refuses the directory with one line saying to rerun ingest.

The process and every process it started (Ray's GCS, raylet and workers) are killed by pid.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.cli import main
from tests.conftest import REPO, shared_path
from wordtree_build.tree import WordTree

CHIHUAHUA = "n02085620"


def _dataset(root: Path, n: int = 600) -> Path:
    """n 640x480 JPEGs in one class folder: enough decoding work (~10 ms each) that the ingest is
    still running when its first part appears. One image encoded once, written n times: the
    ingest decodes each file all the same."""
    y, x = np.mgrid[0:480, 0:640]
    folder = root / "train" / CHIHUAHUA
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(np.stack([x % 256, y % 256, (x ^ y) % 256], -1).astype(np.uint8)).save(buf, "JPEG")
    for i in range(n):
        (folder / f"{CHIHUAHUA}_{i}.JPEG").write_bytes(buf.getvalue())
    return root / "train"


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), itself included."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = {pid}, [pid]
    while todo:
        cur = todo.pop()
        kids = {p for p, pp in parents.items() if pp == cur} - found
        found |= kids
        todo += kids
    return found


def _kill_tree(proc: subprocess.Popen) -> set[int]:
    """SIGKILL the ingest and everything it started: its session (Ray's processes inherit it) and,
    should one have left it, each descendant by pid."""
    pids = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_mid_ingest_then_every_reader_refuses(tmp_path, capsys):
    d = shared_path("darknet")
    tree = tmp_path / "tree.parquet"
    WordTree.from_darknet(str(d / "9k.tree"), str(d / "9k.names")).to_parquet(str(tree))
    images = _dataset(tmp_path / "imagenet")
    root = tmp_path / "out"
    shard_dir = root / "shards" / "imagenet-train"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    cmd = [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())", "ingest",
           "--tree", str(tree),
           "--set", f"storage.root={root}", "--set", "sample_data.enabled=false",
           "--set", f"data.imagenet_train={images}", "--set", "data.shard_mb=0.01", "--set", "ray.num_cpus=2"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(shard_dir.glob("part-*.parquet")):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no part written in 240 s"
            time.sleep(0.02)
        killed = _kill_tree(proc)
    finally:
        killed = _kill_tree(proc) | locals().get("killed", set())
        proc.stdout.close()
    assert proc.wait() == -signal.SIGKILL
    parts = list(shard_dir.glob("part-*.parquet"))
    assert parts and not (shard_dir / "manifest.json").exists(), "the ingest finished before the kill"

    expected = (f"y9k: error: {shard_dir}: no manifest.json: not an ingest output, or an interrupted run; "
                "run `y9k ingest` again")
    for args in (["train", "--shards", str(shard_dir), "--out", str(tmp_path / "tr")],
                 ["anchors", "--shards", str(shard_dir), "--out", str(tmp_path / "an")],
                 ["evaluate", "--shards", str(shard_dir), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "ev")]):
        rc = main([*args, "--set", f"storage.root={root}"])
        err = capsys.readouterr().err
        assert rc == 1 and [ln for ln in err.splitlines() if ln.startswith("y9k")] == [expected], (args, err)
    # The default shard lookup of train / anchors never picks an uncommitted directory either.
    assert main(["train", "--set", f"storage.root={root}", "--set", "train.mode=classify"]) == 1
    assert "no committed classify training shards" in capsys.readouterr().err

    time.sleep(1)
    assert not [pid for pid in killed if _alive(pid)], "processes of the killed ingest still running"
