#!/usr/bin/env bash
# The GPU check (issue 20): one command on a machine with an NVIDIA GPU, under 10 minutes.
#
#   tests/gpu/check.sh            install, then run every GPU step; results in tests/benchmarks/results/*-gpu.json
#   tests/gpu/check.sh --dry-run  resolve every step (venv, config, models, FLOP counts, output files) and
#                                 execute nothing that needs CUDA: what CI runs on CPU
#
# Steps: 1. install (the project into $VENV, torch==2.13.0 as the machine's wheel resolves: CUDA here);
# 2. a Ray Train run on the GPU (NCCL process group, bf16 autocast); 3. the same path for 200 steps
# (images/s, data wait); 4. YOLOv2-416 and YOLO9000 inference images/s and model FLOP utilisation.
# VENV=... uses an existing environment; SKIP_INSTALL=1 skips step 1 when it already holds the project.
set -euo pipefail
cd "$(dirname "$0")/../.."
DRY=""
case "${1:-}" in
  --dry-run) DRY="--dry-run" ;;
  "") ;;
  *) echo "usage: tests/gpu/check.sh [--dry-run]" >&2; exit 2 ;;
esac
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"

step() { echo "=== $*"; }

step "1/4 install into $VENV"
if [[ -n "$DRY" || "${SKIP_INSTALL:-0}" == 1 ]]; then
  echo "pip install torch==2.13.0 -e '.[dev]' into $VENV (${DRY:-SKIP_INSTALL=1}: not executed)"
  [[ -x "$PY" ]] || { echo "no python at $PY: set VENV" >&2; exit 1; }
else
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "torch==2.13.0"
  "$VENV/bin/pip" install --quiet "torch==2.13.0" -e '.[dev]'
fi
"$PY" -c "import torch, ray, pipelines; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)"

step "2/4 Ray Train step on the GPU (NCCL, bf16 autocast)"
"$PY" tests/gpu/gpu_check.py ray-step $DRY
step "3/4 train benchmark on the GPU"
"$PY" tests/gpu/gpu_check.py train $DRY
step "4/4 inference images/s and MFU"
"$PY" tests/gpu/gpu_check.py inference $DRY
echo "GPU check ${DRY:+(dry run) }done"
