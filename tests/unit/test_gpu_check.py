"""tests/gpu/check.sh --dry-run: every step of the GPU check resolves on a CPU machine (CI), and
nothing needing CUDA runs (no GPU result file is written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "benchmarks" / "results"


def test_gpu_check_dry_run_resolves_every_step():
    before = {p: p.stat().st_mtime for p in RESULTS.glob("*-gpu.json")}
    venv = Path(sys.executable).parent.parent
    proc = subprocess.run([str(ROOT / "tests" / "gpu" / "check.sh"), "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "VENV": str(venv)}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for n in range(1, 5):
        assert f"=== {n}/4" in out
    assert "backend nccl, bf16 autocast" in out
    # Darknet prints 29.46 BFLOPs for yolov2 at 416 (yolov2.cfg): the MFU's FLOP count is darknet's.
    assert "yolov2@416 batch 1: 29.46 BFLOPs/image" in out
    assert "H200" in out and "dry run) done" in out
    assert {p: p.stat().st_mtime for p in RESULTS.glob("*-gpu.json")} == before


def test_gpu_check_rejects_unknown_arguments():
    proc = subprocess.run([str(ROOT / "tests" / "gpu" / "check.sh"), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: tests/gpu/check.sh [--dry-run]" in proc.stderr
