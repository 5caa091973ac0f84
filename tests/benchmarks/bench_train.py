"""Training throughput against plain PyTorch: Ray Train + Ray Data vs DDP + DataLoader, same work.

    .venv/bin/python tests/benchmarks/bench_train.py [--steps 200] [--rounds 2] [--workers 2]

The project's path: the `train` stage (run_train: TorchTrainer, shards -> map_batches decode +
augment -> get_dataset_shard, joint batches) on the generated sample data's shards, images/s and
data-wait fraction read from what rank 0 logged to MLflow per logging window. The peer baseline
(_plain_train.py): the same model, loss, optimizer, decode + augmentation and joint batch mix as a
plain PyTorch script, DataLoader worker processes reading the same Parquet shards and DDP over
gloo with the same number of ranks, on the same cores. The two alternate (Ray, plain, Ray,
plain, ...) in one run; the first window of each run (start-up) is left out. CPU seconds per 100
steps of every process group (trainers, data workers, Ray's coordinator actors, raylet/GCS, the
driver) come from /proc (_proc.py), so the overhead has names. Also reported: the compute-only
bound (one resident batch, forward + backward + step, 1 thread x workers). Targets (issue 20):
Ray path >= 0.85x the plain baseline's images/s; data wait < 5% of step time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import summarize, time_alternating, write_result  # noqa: E402
from _plain_train import run_plain  # noqa: E402
from _proc import CpuSampler  # noqa: E402


def _shard_writer():
    """The synthetic shard writer of the integration tests (one definition of the format)."""
    path = HERE.parent / "integration" / "test_train_ray.py"
    spec = importlib.util.spec_from_file_location("train_ray_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sample_shards(root: Path, cfg) -> tuple[list[str], object]:
    """The user's path on generated sample data: WordTree of its labels, then ingest to shards."""
    from pipelines.layout import Layout, point_config_at_sample_data
    from pipelines.sample_data import generate
    from pipelines.stages.ingest import run_ingest, sources_from_config
    from wordtree_build.build import build_wordtree
    from wordtree_build.labelmaps import COCO_CATEGORIES

    sample = Path(Layout.of(cfg.storage).sample)
    generate(str(sample), seed=0, scale="small")
    point_config_at_sample_data(cfg)
    wnids = {c.wnid for c in COCO_CATEGORIES}
    wnids |= {d.name for d in (sample / "imagenet" / "train").iterdir()}
    wnids |= {line.split("\t")[0] for line in (sample / "imagenet_det" / "det_classes.tsv").read_text().splitlines()
              if line.strip()}
    tree, _ = build_wordtree(sorted(wnids))
    run_ingest(cfg.data, cfg.storage, cfg.ray, tree, sources_from_config(cfg.data, cfg.storage.options))
    shards = sorted(str(p) for p in (root / "shards").iterdir() if p.name.endswith("-train"))
    return shards, tree


def compute_only_images_per_s(cfg, tree_parents, batch: int, size: int) -> dict[str, float]:
    import torch

    from pipelines.train.loop import build_model, forward, prepare_for_training, train_precision
    from pipelines.train.optim import build_optimizer, param_groups, set_lr
    from yolo_core.region import RegionLoss
    from yolo_core.tree import Tree

    torch.set_num_threads(1)
    tree = Tree(tree_parents)
    model = prepare_for_training(build_model(cfg.model, cfg.train, tree, None), cfg.train)
    precision = train_precision(cfg.train, torch.device("cpu"))  # as the loop runs it
    opt = build_optimizer(param_groups(model, 0.0005), cfg.train)
    set_lr(opt, 1e-3)
    loss_fn = RegionLoss(model.anchors, model.num_classes, tree=tree)
    x = torch.rand(batch, 3, size, size)
    targets = {"boxes": torch.tensor([[[0.5, 0.5, 0.3, 0.3]]]).repeat(batch, 1, 1),
               "labels": torch.ones(batch, 1, dtype=torch.long), "image_label": torch.full((batch,), -1)}

    def step() -> None:
        opt.zero_grad()
        loss_fn(forward(model, x, cfg.train, precision), targets, 0)["total"].backward()
        opt.step()

    t = time_alternating({"step": step}, repeats=5, warmup=2)["step"]
    return {k: (batch / v if k in ("median", "min", "max") else v) for k, v in t.items()}


def compare_memory_formats(width: float, size: int, batch: int, repeats: int = 5) -> dict[str, dict]:
    """Compute-only training step (forward + backward + SGD, one thread, as a worker runs) of the demo
    model in NCHW, channels_last, and channels_last under bf16 autocast (where the CPU computes bf16
    natively), alternating: what decides the defaults of `train.channels_last` and `train.amp`."""
    import torch

    from yolo_core.inference import choose_precision
    from yolo_core.models import create_model

    torch.set_num_threads(1)
    x = torch.rand(batch, 3, size, size)
    fmts = ["nchw", "channels_last"]
    if choose_precision("cpu").dtype == torch.bfloat16:
        fmts.append("channels_last bf16")
    steps = {}
    for fmt in fmts:
        torch.manual_seed(0)
        model = create_model("yolo9000", width=width, num_classes=100).train()
        inp = x
        if fmt.startswith("channels_last"):
            model, inp = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)

        def step(model=model, opt=opt, inp=inp, bf16=fmt.endswith("bf16")) -> None:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(inp)
            out.float().square().mean().backward()
            opt.step()

        steps[fmt] = step
    t = time_alternating(steps, repeats=repeats, warmup=1)
    out = {f: {"value": batch / v["median"], "min": batch / v["max"], "max": batch / v["min"], "unit": "images/s"}
           for f, v in t.items()}
    for f, v in out.items():
        print(f"train step {f:14s} {v['value']:.1f} images/s [{v['min']:.1f}, {v['max']:.1f}]", flush=True)
    return out


def record_memory_formats(width: float = 0.25, size: int = 192, batch: int = 16) -> None:
    """Add the memory-format comparison to results/train.json (the demo model at the demo's size)."""
    import json

    from _common import RESULTS, regenerate_table

    res = compare_memory_formats(width, size, batch)
    path = RESULTS / "train.json"
    record = json.loads(path.read_text())
    record["workload"]["memory_format"] = {"model": f"yolo9000 width {width}, 100 classes", "input_size": size,
                                           "batch": batch, "threads": 1, "what": "compute-only step, alternating"}
    for fmt, v in res.items():
        record["metrics"][f"step images/s {fmt}"] = v
    path.write_text(json.dumps(record, indent=2) + "\n")
    regenerate_table()


def ray_windows(client, run_id: str) -> list[dict[str, float]]:
    """Rank 0's log windows of a Ray Train run, from MLflow: end time, step, images/s, data wait."""
    by_step: dict[int, dict[str, float]] = {}
    for key in ("images_per_s", "data_wait_fraction"):
        for m in client.get_metric_history(run_id, key):
            w = by_step.setdefault(m.step, {"step": m.step})
            w[key], w["time"] = m.value, m.timestamp / 1000
    return [by_step[s] for s in sorted(by_step)]


def measure(windows: list[dict[str, float]], sampler: CpuSampler, started: float,
            images_per_step: int) -> dict[str, object]:
    """One run: its windows after the first (start-up) and the CPU seconds each process group spent
    per 100 steps over them; and the whole run from the call (start-up and data read ahead included),
    split into start-up (call to first step) and steps (first step to last)."""
    steady = windows[1:]
    steps = steady[-1]["step"] - windows[0]["step"]
    cpu = sampler.between(windows[0]["time"], steady[-1]["time"])
    whole = sampler.between(started, steady[-1]["time"])
    # The first window starts with the first step: its end less its length (images / images per s).
    first = windows[0]
    first_step = first["time"] - first["step"] * images_per_step / first["images_per_s"]
    return {"images_per_s": [w["images_per_s"] for w in steady],
            "startup_s": first_step - started,
            "steps_s": steady[-1]["time"] - first_step,
            "data_wait_fraction": [w["data_wait_fraction"] for w in steady],
            "cpu_s_per_100_steps": {k: round(v * 100 / steps, 2) for k, v in cpu.items()},
            "whole_run_s": steady[-1]["time"] - started,
            "whole_run_cpu_s_per_100_steps": {k: round(v * 100 / steady[-1]["step"], 2) for k, v in whole.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2,
                    help="Ray Train runs and plain-PyTorch runs, alternated (Ray, plain, Ray, plain, ...)")
    ap.add_argument("--data", choices=["sample", "synthetic"], default="sample",
                    help="generated sample data through wordtree + ingest (default), or synthetic shards")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--memory-format-only", action="store_true",
                    help="only compare NCHW and channels_last training steps and add them to results/train.json")
    args = ap.parse_args()
    if args.memory_format_only:
        record_memory_formats()
        return

    import pyarrow.parquet as pq
    import ray
    from mlflow import MlflowClient

    from pipelines.config import load_config
    from pipelines.shards import shard_files
    from pipelines.train.stage import run_train

    fx = _shard_writer()
    runs: dict[str, list[dict[str, object]]] = {"ray": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp, CpuSampler() as sampler:
        root = Path(tmp)
        cfg = load_config("demo", [
            f"storage.root={root}", f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", "mlflow.experiment=bench",
            "model.width=0.125", f"train.num_workers={args.workers}", f"train.batch_size={args.batch}",
            f"train.max_steps={args.steps}", "train.log_every=10", "train.checkpoint_every=1000",
            "train.multiscale=false", f"train.input_size={args.size}", "train.burn_in=5", "train.max_failures=0",
        ])
        # Logical CPUs: one per training worker plus two for the decode / augment tasks.
        data_cpus = 2
        ray.init(num_cpus=args.workers + data_cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        if args.data == "sample":
            shards, tree = sample_shards(root, cfg)
        else:
            shards, tree = fx.write_shards(root, n_det=96, n_cls=96, size=args.size), fx.SmallTree()
        rows = {Path(s).name: sum(pq.ParquetFile(f).metadata.num_rows for f in Path(s).glob("*.parquet"))
                for s in shards}
        client = MlflowClient(f"sqlite:///{root}/mlflow.db")
        # The same data CPUs for the baseline: DataLoader workers over all ranks and streams.
        loader_workers = max(1, data_cpus // (args.workers * 2))
        images_per_step = args.batch * args.workers
        for r in range(args.rounds):
            started = time.time()
            res = run_train(cfg, shards, tree, None, str(root / "train" / f"bench{r}"))
            runs["ray"].append(measure(ray_windows(client, res.run_id), sampler, started, images_per_step))
            started = time.time()
            windows = run_plain(cfg, list(tree.parents), shard_files(shards), loader_workers, str(root / f"plain{r}.json"))
            runs["plain"].append(measure(windows, sampler, started, images_per_step))
        ray.shutdown()
        losses = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "loss_total"))
        base = compute_only_images_per_s(cfg, list(tree.parents), args.batch, args.size)

    def pooled(path: str, key: str) -> dict[str, float]:
        return summarize([v for run in runs[path] for v in run[key]])

    def cpu(path: str, key: str = "cpu_s_per_100_steps") -> dict[str, float]:
        groups = runs[path][0][key]
        return {g: round(statistics.median(run[key][g] for run in runs[path]), 2) for g in groups}

    def whole_run_s(path: str, key: str = "whole_run_s") -> float:
        return statistics.median(run[key] for run in runs[path])

    ray_ips, plain_ips = pooled("ray", "images_per_s"), pooled("plain", "images_per_s")
    ray_wait, plain_wait = pooled("ray", "data_wait_fraction"), pooled("plain", "data_wait_fraction")
    ratio = ray_ips["median"] / plain_ips["median"]
    # The steady-state windows leave Ray's start-up and read-ahead out; the whole run (call to last
    # step) is what a user waits for, so the target must hold on both.
    whole_ratio = whole_run_s("plain") / whole_run_s("ray")
    # What the whole-run gap is made of: the CPU seconds Ray spends beyond the plain script over the
    # run, and the wall time they take at the cores the Ray run kept busy (both runs keep the
    # machine busy, so a run's wall time is about its CPU time / cores in use).
    whole_cpu = {p: sum(cpu(p, "whole_run_cpu_s_per_100_steps").values()) * args.steps / 100 for p in runs}
    ray_cores = whole_cpu["ray"] / whole_run_s("ray")
    extra_cpu = whole_cpu["ray"] - whole_cpu["plain"]
    load = os.getloadavg()
    path = write_result(
        "train",
        workload={"model": "yolo9000 width 0.125", "workers": args.workers, "batch_per_worker": args.batch,
                  "input_size": args.size, "steps": args.steps, "rounds": args.rounds, "data": args.data,
                  "rows": rows, "det_fraction": cfg.train.det_fraction, "data_cpus": data_cpus,
                  "dataloader_workers_per_rank_and_stream": loader_workers,
                  "load_average_1_5_15_min_at_end": [round(x, 2) for x in load]},
        metrics={
            "images_per_s": {"value": ray_ips["median"], "unit": "images/s", **ray_ips},
            "plain_images_per_s": {"value": plain_ips["median"], "unit": "images/s", **plain_ips},
            "data_wait_fraction": {"value": ray_wait["median"], "unit": "fraction of step time", **ray_wait},
            "plain_data_wait_fraction": {"value": plain_wait["median"], "unit": "fraction of step time",
                                         **plain_wait},
            "cpu_s_per_100_steps_ray": {"value": cpu("ray"), "unit": "CPU s per 100 steps, by process group"},
            "cpu_s_per_100_steps_plain": {"value": cpu("plain"), "unit": "CPU s per 100 steps, by process group"},
            "whole_run_s_ray": {"value": whole_run_s("ray"), "unit": "s, call to last step (start-up included)"},
            "whole_run_s_plain": {"value": whole_run_s("plain"), "unit": "s, call to last step (start-up included)"},
            "whole_run_images_per_s_ray": {"value": args.steps * images_per_step / whole_run_s("ray"),
                                           "unit": "images/s, call to last step"},
            "whole_run_images_per_s_plain": {"value": args.steps * images_per_step / whole_run_s("plain"),
                                             "unit": "images/s, call to last step"},
            "startup_s_ray": {"value": whole_run_s("ray", "startup_s"), "unit": "s, call to first step"},
            "startup_s_plain": {"value": whole_run_s("plain", "startup_s"), "unit": "s, call to first step"},
            "steps_s_ray": {"value": whole_run_s("ray", "steps_s"), "unit": "s, first step to last"},
            "steps_s_plain": {"value": whole_run_s("plain", "steps_s"), "unit": "s, first step to last"},
            "whole_run_cpu_s_per_100_steps_ray": {"value": cpu("ray", "whole_run_cpu_s_per_100_steps"),
                                                  "unit": "CPU s per 100 steps over the whole run"},
            "whole_run_cpu_s_per_100_steps_plain": {"value": cpu("plain", "whole_run_cpu_s_per_100_steps"),
                                                    "unit": "CPU s per 100 steps over the whole run"},
            "whole_run_cores_in_use_ray": {"value": ray_cores, "unit": "CPU s / wall s over the whole run"},
            "whole_run_cores_in_use_plain": {"value": whole_cpu["plain"] / whole_run_s("plain"),
                                             "unit": "CPU s / wall s over the whole run"},
            "whole_run_extra_cpu_s_ray": {"value": extra_cpu, "unit": "CPU s beyond the plain run, whole run"},
            "whole_run_gap_s": {"value": whole_run_s("ray") - whole_run_s("plain"),
                                "unit": "s, Ray's whole run less the plain one"},
            "whole_run_gap_from_extra_cpu_s": {"value": extra_cpu / ray_cores,
                                               "unit": "s, the extra CPU s at the Ray run's cores in use"},
            "compute_only_images_per_s": {"value": base["median"] * args.workers, "unit": "images/s",
                                          "what": "one resident batch, 1 thread, x workers, the step as the loop runs it: the bound"},
            "loss_first_window": {"value": losses[0][1], "unit": "loss"},
            "loss_last_window": {"value": losses[-1][1], "unit": "loss"},
        },
        baseline={"what": "plain PyTorch: DDP (gloo) ranks + DataLoader workers on the same shards, same model "
                          "(memory format, autocast), loss, optimizer, decode + augment and joint batches, "
                          "alternated in this run",
                  "value": plain_ips["median"], "unit": "images/s"},
        ratio=ratio,
        target="Ray Train + Ray Data images/s >= 0.85x the plain baseline, in steady state and over the whole "
               "run (call to last step); data wait < 5% of step time",
        meets_target=min(ratio, whole_ratio) >= 0.85 and ray_wait["median"] < 0.05,
        notes=("Images/s are the medians over the logging windows of every round (first window, holding "
               "start-up, left out). CPU seconds are per 100 steps over the same windows, from /proc, for the "
               "processes this benchmark started (other users' processes not counted; Ray's idle processes "
               "count during the plain runs too). The load average at the end "
               f"({load[0]:.1f}) counts the benchmark's own processes; absolute figures move with the "
               "machine's speed from hour to hour, the same-run ratio is the claim. Whole run = start-up "
               "(call to first step: Ray starts its controller, worker "
               "and coordinator processes, the plain script spawns its ranks) + steps (first to last); "
               "the target is judged on the whole run too. What the whole-run gap is made of: both runs keep "
               "the cores busy, so Ray's extra CPU seconds over the run (whole_run_extra_cpu_s_ray: by group, "
               "whole_run_cpu_s_per_100_steps_*) divided by the cores the Ray run kept busy "
               f"(whole_run_gap_from_extra_cpu_s, {extra_cpu / ray_cores:.1f} s) against the measured gap "
               f"(whole_run_gap_s, {whole_run_s('ray') - whole_run_s('plain'):.1f} s); that CPU is Ray's start-up "
               "per fit (its controller, worker, coordinator and decode processes importing Ray Train, Ray "
               "Data and torch), not a cost per step."),
    )
    record_memory_formats()
    print(path.read_text())


if __name__ == "__main__":
    main()
