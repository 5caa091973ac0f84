"""Evaluation benchmark: metric time for 20,000 images x 200 classes, and batch-inference images/s.

    .venv/bin/python tests/benchmarks/bench_eval.py            # results/eval.json (eval-gpu.json on a GPU)
    .venv/bin/python tests/benchmarks/bench_eval.py --quick    # smaller workload, for a smoke run

1. Metrics: synthetic ImageNet-DET-like ground truth (20,000 images, 200 classes, 1 to 5 boxes per
   image) and 10 detections per image (jittered truths plus false positives). The project's
   per-class COCOeval (`metrics.ap50`) against the baseline of one plain COCOeval over every
   image x class pair with the same parameters; both must give the same mAP.
2. Inference: the small model (yolo9000 at width 1/8 over darknet's 9,418-node tree, DET-200
   subset) on CPU, or YOLOv2 at 416 on a GPU, through the Ray Data actor pool over a Parquet
   shard (the whole path, start-up included) against a single-process Detector loop.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks._common import time_alternating, write_result  # noqa: E402


def synthetic_det(num_images: int, num_classes: int, dets_per_image: int, seed: int = 0):
    from pipelines.evaluate import metrics as M

    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 6, num_images)
    img = np.repeat(np.arange(num_images), per_image)
    xy = rng.uniform(0, 350, (len(img), 2))
    wh = rng.uniform(20, 150, (len(img), 2))
    boxes = np.hstack([xy, xy + wh])
    gt = M.GroundTruth([f"img{i}" for i in range(num_images)], [f"c{k}" for k in range(num_classes)],
                       [f"c{k}" for k in range(num_classes)], boxes, img, rng.integers(0, num_classes, len(img)))
    # Detections: every truth jittered (some by enough to miss), the rest random false positives.
    jitter = boxes + rng.normal(0, 0.15, boxes.shape) * np.tile(wh, 2)
    n_fp = num_images * dets_per_image - len(img)
    fp_xy = rng.uniform(0, 350, (n_fp, 2))
    fp = np.hstack([fp_xy, fp_xy + rng.uniform(20, 150, (n_fp, 2))])
    preds = M.Predictions(np.vstack([jitter, fp]), rng.random(len(img) + n_fp),
                          np.concatenate([img, rng.integers(0, num_images, n_fp)]),
                          np.concatenate([gt.box_class, rng.integers(0, num_classes, n_fp)]))
    return gt, preds


def plain_cocoeval_map(gt, preds) -> float:
    """Baseline: one COCOeval over all images and classes (iouThrs [.5], area 'all', maxDets 100)."""
    from pycocotools.cocoeval import COCOeval

    from pipelines.evaluate.metrics import _coco_dataset

    coco_gt = _coco_dataset(gt.num_images, gt.num_classes, gt.boxes, gt.box_image, gt.box_class, None, gt.crowd)
    coco_dt = _coco_dataset(gt.num_images, gt.num_classes, preds.boxes, preds.box_image, preds.box_class,
                            preds.scores, None)
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][0, :, :, 0, 0]
    return float(p[:, (p > -1).all(0)].mean())


def bench_metrics(num_images: int, repeats: int) -> dict:
    from pipelines.evaluate import metrics as M

    gt, preds = synthetic_det(num_images, 200, 10)
    ours = M.summarize(M.ap50(gt, preds).ap50, gt.class_ids)["map50_all"]
    base = plain_cocoeval_map(gt, preds)
    assert abs(ours - base) < 1e-9, (ours, base)
    t = time_alternating({"project": lambda: M.ap50(gt, preds), "baseline": lambda: plain_cocoeval_map(gt, preds)},
                         repeats=repeats, warmup=0)
    return {"workload": {"images": num_images, "classes": 200, "gt_boxes": len(gt.boxes),
                         "detections": len(preds.scores), "map50": ours}, "timing": t}


def shard(num_images: int, size: int, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(num_images):
        buf = io.BytesIO()
        Image.fromarray((rng.random((size, size * 3 // 4, 3)) * 255).astype(np.uint8)).save(buf, format="JPEG")
        rows.append({"image_id": f"bench/{i}", "image": buf.getvalue(), "orig_width": size * 3 // 4, "orig_height": size})
    pq.write_table(pa.Table.from_pylist(rows), path)


def bench_inference(num_images: int, repeats: int, gpu: bool) -> dict:
    import ray
    import torch
    from PIL import Image

    from pipelines.inference import Detector, predict_shards
    from yolo_core.models import create_model
    from yolo_core.tree import Tree

    darknet = REPO.parent / "shared" / "data" / "darknet"
    if gpu:
        name, model, tree, subset, size = "yolov2-416", create_model("yolov2"), None, None, 416
    else:
        tree = Tree.load(darknet / "9k.tree")
        subset = [int(x) for x in (darknet / "inet9k.map").read_text().split()]
        name, size = "yolo9000 width 1/8, 9k tree, 256 px", 256
        model = create_model("yolo9000", width=0.125, num_classes=tree.num_nodes)
    torch.manual_seed(0)
    model.eval()
    settings = {"tree": tree, "class_subset": subset, "input_size": size, "thresh": 0.005}
    # address="local": a fresh instance of our own, even when another Ray cluster runs on this machine.
    ray.init(address="local", num_cpus=None if gpu else 2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "shard.parquet"
        shard(num_images, size, src)
        import pyarrow.parquet as pq

        images = [Image.open(io.BytesIO(b)).convert("RGB") for b in pq.read_table(src).column("image").to_pylist()]
        det = Detector(model, **settings, device="cuda" if gpu else "cpu")

        def loop() -> None:
            for i in range(0, len(images), 16):
                det(images[i:i + 16])
            if gpu:
                torch.cuda.synchronize()

        def on_ray() -> None:
            predict_shards(model, [str(src)], str(Path(tmp) / "preds"), batch_size=16, use_gpu=gpu, **settings)

        t = time_alternating({"project": on_ray, "baseline": loop}, repeats=repeats, warmup=1)
    ray.shutdown()
    return {"model": name, "images": num_images, "input_size": size, "timing": t,
            "images_per_s": {k: num_images / v["median"] for k, v in t.items()}}


def _rate(n: int, t: dict) -> dict:
    """Images/s from seconds per run: the median, and min / max from the slowest / fastest run."""
    return {"value": n / t["median"], "median": n / t["median"], "min": n / t["max"], "max": n / t["min"],
            "runs": t["runs"], "unit": "img/s"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 images for the metric, 16 for inference, 1 repeat")
    args = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    repeats = 1 if args.quick else 3
    t0 = time.perf_counter()
    m = bench_metrics(2000 if args.quick else 20000, repeats)
    print("metrics:", m, flush=True)
    inf = bench_inference(16 if args.quick else 64, repeats, gpu)
    proj, base = m["timing"]["project"], m["timing"]["baseline"]
    metrics = {
        "metric_time_s": {**proj, "value": proj["median"], "unit": "s"},
        "metric_time_plain_cocoeval_s": {**base, "value": base["median"], "unit": "s"},
        "inference_ray_images_per_s": _rate(inf["images"], inf["timing"]["project"]),
        "inference_loop_images_per_s": _rate(inf["images"], inf["timing"]["baseline"]),
    }
    path = write_result(
        "eval-gpu" if gpu else "eval",
        workload={"metric": m["workload"], "inference": {k: inf[k] for k in ("model", "images", "input_size")},
                  "total_s": round(time.perf_counter() - t0, 1)},
        metrics=metrics,
        baseline={"what": "one plain COCOeval over all image x class pairs (same parameters, same mAP)",
                  "value": base["median"], "inference_loop_images_per_s": inf["images_per_s"]["baseline"],
                  "inference_timing": inf["timing"]},
        ratio=base["median"] / proj["median"],
        target="metric time for 20,000 images x 200 classes < 60 s; Ray inference images/s reported "
               "against a single-process loop",
        meets_target=proj["median"] < 60 and not args.quick,
        notes="ratio = plain COCOeval time / per-class COCOeval time. Ray inference includes actor start-up "
              "and the Parquet write; the machine's load at run time widens min..max.",
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
