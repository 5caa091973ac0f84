"""The GPU paths that have only run on CPU so far, one step at a time (called by check.sh).

    python tests/gpu/gpu_check.py ray-step  [--dry-run]   # Ray Train on the GPU: NCCL + bf16 autocast
    python tests/gpu/gpu_check.py train     [--dry-run]   # the same path for 200 steps: images/s, data wait
    python tests/gpu/gpu_check.py inference [--dry-run]   # YOLOv2-416 and YOLO9000 images/s and MFU

Each real step writes ``tests/benchmarks/results/<name>-gpu.json`` (train-step-gpu, train-gpu,
inference-gpu). ``--dry-run`` resolves everything the step would use (config with its GPU
overrides, model, FLOP count, peak, output file) and executes nothing that needs CUDA.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks._common import RESULTS, summarize, time_alternating, write_result  # noqa: E402

# Dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a substring of the device
# name: bf16 for the autocast path. Model FLOP utilisation = achieved FLOP/s / this.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
INFERENCE = [  # (label, model, width, input size, batch)
    ("yolov2@416 batch 1", "yolov2", 1.0, 416, 1),
    ("yolov2@416 batch 64", "yolov2", 1.0, 416, 64),
    ("yolo9000@416 batch 64", "yolo9000", 1.0, 416, 64),
]


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def train_config(root: Path, steps: int):
    """The demo config on one GPU worker: NCCL process group, bf16 autocast, small model."""
    from pipelines.config import load_config

    return load_config("demo", [
        f"storage.root={root}", f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", "mlflow.experiment=gpu-check",
        "model.width=0.25", "train.use_gpu=true", "train.amp=true", "train.num_workers=1", "train.batch_size=32",
        f"train.max_steps={steps}", "train.log_every=10", "train.checkpoint_every=1000", "train.multiscale=false",
        "train.input_size=256", "train.burn_in=5", "train.max_failures=0",
    ])


def ray_train(name: str, steps: int, dry_run: bool) -> None:
    import importlib.util

    from pipelines.train.stage import run_train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = train_config(root, steps)
        assert cfg.train.use_gpu and cfg.train.amp
        out = RESULTS / f"{name}-gpu.json"
        if dry_run:
            print(f"{name}: run_train {steps} steps, backend nccl, bf16 autocast, "
                  f"{cfg.train.num_workers} GPU worker(s) -> {out} (dry run: not executed)")
            return
        import ray
        import torch

        spec = importlib.util.spec_from_file_location("fx", ROOT / "tests" / "integration" / "test_train_ray.py")
        fx = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fx)
        shards = fx.write_shards(root, n_det=256, n_cls=256, size=256)
        ray.init(include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        t0 = time.perf_counter()
        res = run_train(cfg, shards, fx.SmallTree(), None, str(root / "train" / name))
        wall = time.perf_counter() - t0
        ray.shutdown()
        from mlflow import MlflowClient

        client = MlflowClient(cfg.mlflow.tracking_uri)
        hist = {k: [m.value for m in sorted(client.get_metric_history(res.run_id, k), key=lambda m: m.step)]
                for k in ("images_per_s", "data_wait_fraction", "loss_total")}
        tags = client.get_run(res.run_id).data.tags
        ips, wait = summarize(hist["images_per_s"][1:] or hist["images_per_s"]), summarize(
            hist["data_wait_fraction"][1:] or hist["data_wait_fraction"])
        ok = res.step == steps and all(math.isfinite(v) for v in hist["loss_total"])
        write_result(
            f"{name}-gpu", workload={"steps": steps, "config": cfg.flat(), "device_tag": tags.get("device"),
                                     "gpu": torch.cuda.get_device_name(0), "wall_s": wall},
            metrics={"images_per_s": {"value": ips["median"], "unit": "images/s", **ips},
                     "data_wait_fraction": {"value": wait["median"], "unit": "fraction of step time", **wait},
                     "loss_first_window": {"value": hist["loss_total"][0], "unit": "loss"},
                     "loss_last_window": {"value": hist["loss_total"][-1], "unit": "loss"}},
            baseline={"what": "none: the GPU path's first run (NCCL process group, bf16 autocast)"},
            ratio=None, target="every step runs on the GPU with finite losses; data wait < 5%",
            meets_target=ok and wait["median"] < 0.05,
            notes="Ray Train (1 GPU worker, NCCL) + Ray Data on synthetic shards.")
        assert ok, f"{name}: {res.step} of {steps} steps, losses {hist['loss_total']}"


def inference(dry_run: bool) -> None:
    import torch

    from yolo_core.flops import count_flops
    from yolo_core.models import create_model

    out = RESULTS / "inference-gpu.json"
    flops = {label: count_flops(create_model(name, width=width), size, size) for label, name, width, size, _ in INFERENCE}
    if dry_run:
        for label, *_ in INFERENCE:
            print(f"inference: {label}: {flops[label]:.2f} BFLOPs/image, bf16 autocast + channels_last")
        print(f"inference: peaks known for {sorted(PEAK_BF16_TFLOPS)} -> {out} (dry run: not executed)")
        return
    device_name = torch.cuda.get_device_name(0)
    peak = peak_tflops(device_name)
    metrics = {}
    for label, name, width, size, batch in INFERENCE:
        model = create_model(name, width=width).eval().cuda().to(memory_format=torch.channels_last)
        x = torch.rand(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)

        @torch.no_grad()
        def run(model=model, x=x) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model(x)

        t = time_alternating({"run": run}, repeats=20, warmup=3, sync=torch.cuda.synchronize)["run"]
        ips = batch / t["median"]
        tflops = ips * flops[label] / 1000
        metrics[f"{label} images/s"] = {"value": ips, "unit": "images/s", "min": batch / t["max"],
                                        "max": batch / t["min"]}
        metrics[f"{label} MFU"] = {"value": tflops / peak if peak else None, "unit": "fraction of bf16 peak",
                                   "achieved_tflops": tflops}
        print(f"{label}: {ips:.1f} images/s, {tflops:.1f} TFLOP/s", flush=True)
    write_result(
        "inference-gpu", workload={"models": INFERENCE, "gpu": device_name, "bflops_per_image": flops},
        metrics=metrics,
        baseline={"what": "the GPU's dense bf16 tensor-core peak (data sheet)", "value": peak, "unit": "TFLOP/s"},
        ratio=None, target="images/s and model FLOP utilisation reported (darknet's FLOP count)",
        meets_target=peak is not None,
        notes="bf16 autocast, channels_last, eager. The paper: YOLOv2 416 at 67 FPS on a Titan X.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["ray-step", "train", "inference"])
    ap.add_argument("--dry-run", action="store_true", help="resolve the step; execute nothing that needs CUDA")
    args = ap.parse_args()
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"{args.step}: torch {torch.__version__} sees no CUDA device (use --dry-run on CPU)")
    if args.step == "ray-step":
        ray_train("train-step", 20, args.dry_run)
    elif args.step == "train":
        ray_train("train", 200, args.dry_run)
    else:
        inference(args.dry_run)


if __name__ == "__main__":
    main()
