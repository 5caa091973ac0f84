"""Inference throughput of the detectors on this machine, against darknet's FLOP count.

Workloads: full YOLOv2 at 416 (batch 1, the paper's setting) and the demo's small model
(yolo9000 at width 0.125, 256 px, batch 8). Options side by side in one run, each timed in
alternation with the others after a warm-up: eager fp32 NCHW (the baseline), channels_last,
bf16 autocast, channels_last + bf16, and torch.compile (fp32). Achieved GFLOP/s = darknet
BFLOPs per image x images/s. Each option's output is compared with the eager one.

Run: .venv/bin/python tests/benchmarks/bench_inference.py   (writes results/inference.json)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import time_alternating, write_result  # noqa: E402
from yolo_core.flops import count_flops  # noqa: E402
from yolo_core.models import create_model  # noqa: E402

WORKLOADS = [  # (label, model, width, input size, batch)
    ("yolov2@416", "yolov2", 1.0, 416, 1),
    ("yolo9000-w0.125@256", "yolo9000", 0.125, 256, 8),
]
REPEATS = 5


def make_runner(model: torch.nn.Module, x: torch.Tensor, option: str) -> Callable[[], torch.Tensor]:
    """A no-argument callable running one batch with the option applied."""
    channels_last = "channels_last" in option
    m = model.to(memory_format=torch.channels_last) if channels_last else model
    inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    if "compile" in option:
        m = torch.compile(m)
    bf16 = "bf16" in option

    def run() -> torch.Tensor:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return m(inp)

    return run


def bench_workload(label: str, name: str, width: float, size: int, batch: int) -> dict[str, dict]:
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    options = ["eager", "channels_last", "bf16", "channels_last+bf16", "compile"]
    bflops = count_flops(create_model(name, width=width), size, size)
    runners: dict[str, Callable[[], torch.Tensor]] = {}
    first_call_s: dict[str, float] = {}
    reference: torch.Tensor | None = None
    deviation: dict[str, float] = {}
    for option in options:
        # A fresh model per option (channels_last converts in place); same seed, same weights.
        torch.manual_seed(1)
        model = create_model(name, width=width).eval()
        try:
            runner = make_runner(model, x, option)
            t0 = time.perf_counter()
            out = runner().float()  # warm-up; for compile this is the compilation
            first_call_s[option] = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001 - an unavailable option is reported, not fatal
            print(f"{label} {option}: unavailable ({type(err).__name__}: {err})", flush=True)
            continue
        if reference is None:
            reference = out
        deviation[option] = float((out - reference).abs().max() / reference.abs().max())
        runners[option] = runner
    timings = time_alternating(runners, repeats=REPEATS, warmup=1)
    results = {}
    for option, t in timings.items():
        ips = batch / t["median"]
        results[option] = {
            "images_per_s": {"value": ips, "min": batch / t["max"], "max": batch / t["min"], "unit": "images/s"},
            "gflops_per_s": {"value": ips * bflops, "unit": "GFLOP/s"},
            "first_call_s": first_call_s[option],
            "max_rel_deviation_from_eager": deviation[option],
        }
        print(f"{label:22s} {option:20s} {ips:8.2f} images/s {ips * bflops:8.1f} GFLOP/s "
              f"(first call {first_call_s[option]:.1f} s, deviation {deviation[option]:.2e})", flush=True)
    return {"bflops_per_image": bflops, "batch": batch, "options": results}


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    runs = {label: bench_workload(label, *rest) for label, *rest in WORKLOADS}
    metrics: dict[str, dict] = {}
    for label, run in runs.items():
        opts = run["options"]
        best = max(opts, key=lambda o: opts[o]["images_per_s"]["value"])
        metrics[f"{label} eager"] = opts["eager"]["images_per_s"]
        metrics[f"{label} best ({best})"] = opts[best]["images_per_s"]
        metrics[f"{label} eager GFLOP/s"] = opts["eager"]["gflops_per_s"]
    for label, run in runs.items():
        for option, r in run["options"].items():
            metrics[f"{label} {option}"] = r["images_per_s"]
            metrics[f"{label} {option} GFLOP/s"] = r["gflops_per_s"]
    main_opts = runs[WORKLOADS[0][0]]["options"]
    eager = main_opts["eager"]["images_per_s"]["value"]
    best = max(r["images_per_s"]["value"] for r in main_opts.values())
    all_ran = all(len(run["options"]) == 5 for run in runs.values())
    path = write_result(
        "inference",
        workload={"models": [dict(zip(("label", "model", "width", "size", "batch"), w)) for w in WORKLOADS],
                  "repeats": REPEATS, "threads": torch.get_num_threads(),
                  "bflops_per_image": {label: run["bflops_per_image"] for label, run in runs.items()},
                  "first_call_s": {label: {o: r["first_call_s"] for o, r in run["options"].items()}
                                   for label, run in runs.items()},
                  "max_rel_deviation_from_eager": {label: {o: r["max_rel_deviation_from_eager"]
                                                           for o, r in run["options"].items()}
                                                   for label, run in runs.items()},
                  "wall_s": time.perf_counter() - t0},
        metrics=metrics,
        baseline={"what": "eager fp32 NCHW forward, yolov2@416 batch 1 (same run)", "value": eager,
                  "unit": "images/s"},
        ratio=best / eager,
        target="GFLOP/s against darknet's FLOP count reported; channels_last / bf16 / compile side by side",
        meets_target=all_ran,
        notes="ratio = fastest option / eager for yolov2@416. GFLOP/s uses darknet's count (29.46 BFLOPs for "
              "yolov2@416). CPU inference only; the paper's 67 FPS at 416 is a Titan X GPU.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
