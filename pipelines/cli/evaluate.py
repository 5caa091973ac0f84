"""Evaluation, prediction and registry commands: `y9k evaluate`, `y9k predict`, `y9k registry`.

    y9k evaluate --model models:/yolo9000@champion --shards ./y9k-data/shards/imagenet_det-val --out ./eval
    y9k predict --model models:/yolo9000@champion --images photos/ --out preds.jsonl --draw drawn/
    y9k predict --cfg yolo9000.cfg --weights yolo9000.weights --tree 9k.tree --names 9k.names --images dog.jpg
    y9k export --model models:/yolo9000@champion --format onnx --out yolo9000.onnx
    y9k registry list | show champion | promote 3 | rollback | compare --metric map50_unseen | history
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.cli.common import add_config_args, load_cli_config
from pipelines.errors import PipelineError
from pipelines.progress import Progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# `y9k predict` prints a progress line every this many images when stderr is not a terminal.
PROGRESS_EVERY = 25
# darknet HEAD's `detector test` defaults.
DARKNET_THRESH, DARKNET_HIER_THRESH, DARKNET_NMS = 0.5, 0.5, 0.45
# darknet's `yolo test` defaults, its YOLOv1 path ([detection] layer: resize, no letterbox).
DARKNET_V1_THRESH, DARKNET_V1_NMS = 0.2, 0.4


class PredictError(PipelineError):
    """Bad `y9k predict` input; names the file or option."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="AP@.5 per class and mAP (all / seen / unseen) on detection shards",
                       description="Ray Data batch inference over detection shards (an actor pool; GPUs when "
                       "present), per-class AP at IoU .5 with pycocotools, mAP over all / seen / unseen classes, "
                       "PR curves and drawn detections, logged to MLflow.")
    add_config_args(p)
    p.add_argument("--model", required=True, help="MLflow model URI (models:/NAME@champion, runs:/...) or directory")
    p.add_argument("--shards", nargs="+", help="shard directories or files (default: "
                   "<storage.root>/shards/imagenet_det-val)")
    p.add_argument("--classes", help="TSV of evaluated classes: wnid<TAB>id<TAB>name (default: the 200 DET classes)")
    p.add_argument("--split", help="TSV wnid<TAB>seen|unseen for the seen / unseen means")
    p.add_argument("--out", help="output directory or URI (default: <storage.root>/eval/<first shard name>)")
    p.add_argument("--run-id", help="log into this MLflow run (e.g. the training run) instead of a new one")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="detect objects in images with a registered model or darknet files",
                       description="Run a detector on images and write one JSON line per image (wnid, name, "
                       "hierarchical label, score, box in pixels); optionally draw the detections.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="MLflow model URI (models:/NAME@champion) or a local model directory")
    src.add_argument("--cfg", help="darknet .cfg file (with --weights): YOLOv2 / YOLO9000 ([region], letterbox) or "
                     "YOLOv1 / Fast YOLO ([detection]: darknet's `yolo test` path, plain resize, thresh .2, NMS .4)")
    p.add_argument("--weights", help="darknet .weights file for --cfg")
    p.add_argument("--tree", help="darknet .tree file for a tree model (YOLO9000) given with --cfg")
    p.add_argument("--names", help="class names, one per line, for --cfg (e.g. 9k.names, coco.names)")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR|URI|FILE",
                   help="images, directories of images, or URIs")
    p.add_argument("--out", default="-", help="JSON-lines output file (default: stdout)")
    p.add_argument("--draw", metavar="OUT_DIR", help="also write each image with its detections drawn here")
    p.add_argument("--thresh", type=float, help="score threshold (model default; darknet: .5, YOLOv1 .2)")
    p.add_argument("--hier-thresh", type=float, help="tree decode threshold (model default; darknet: .5)")
    p.add_argument("--nms", type=float, help="NMS IoU threshold (model default; darknet: .45, YOLOv1 .4)")
    p.add_argument("--input-size", type=int, help="network input size, a multiple of 32 (model default; "
                   "--cfg: the cfg's width)")
    p.add_argument("--tree-decode", choices=("darknet", "intended"),
                   help="top-down WordTree decode. darknet: as darknet's hierarchy_top_prediction runs it "
                   "(absolute probabilities multiplied again along the path, so it stops higher in the tree); "
                   "intended: descend while the node's absolute probability exceeds --hier-thresh, as the paper "
                   "describes. Default: darknet with --cfg (the same detections as darknet), intended with --model")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="how the network runs: auto = torch (batch norm folded, channels_last) in bf16 where "
                   "the hardware computes bf16 natively, else ONNX Runtime on CPU when onnxruntime is installed "
                   "(pip install '.[onnx]'), else torch in fp32 (logged)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto = bf16 where the CPU/GPU computes it natively (faster; outputs move by ~5e-3 "
                   "relative), else fp32. fp32 gives darknet's numbers to float rounding (logged)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a model as ONNX for ONNX Runtime / TensorRT / OpenVINO",
                       description="Export the network (batch norm folded with darknet's formula) as ONNX: input "
                       "'images' (B, 3, H, W) float32 RGB in [0, 1], letterboxed as darknet does; output 'raw', the "
                       "region layer's input (B, A*(5+C), H/32, W/32). Batch, height and width are dynamic. Region "
                       "decode and NMS stay outside the graph (yolo_core.postprocess.detect). With onnxruntime "
                       "installed, the file is opened and checked against the torch model before it is reported.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="MLflow model URI (models:/NAME@ALIAS, runs:/...) or a local model directory")
    src.add_argument("--cfg", help="darknet .cfg file (with --weights)")
    p.add_argument("--weights", help="darknet .weights file for --cfg")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format (onnx)")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--input-size", type=int, help="size the export is traced at (any multiple of 32 runs "
                   "afterwards; default: the model's)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("registry", help="browse and act on the MLflow model registry",
                       description="List versions with aliases and metrics, show one, promote a version to "
                       "champion (only if it beats the champion on mlflow.promote_metric by mlflow.promote_margin, "
                       "unless --force), roll champion back, compare every version, or show who was champion when.")
    rsub = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    for name, helptext in (("list", "versions, newest first"), ("show", "one version: tags and description"),
                           ("promote", "move champion to a version if it is better"),
                           ("rollback", "move champion back to the previous one (or --to VERSION)"),
                           ("compare", "every version side by side (metrics, data fingerprint, tree hash, aliases, "
                            "champion periods) and a plot of the metrics across versions with the champion periods "
                            "shaded"),
                           ("history", "the champion moves: when, which version, from which, who, and why (the "
                            "metric margin, or a manual promote / rollback)")):
        rp = rsub.add_parser(name, help=helptext, description=helptext)
        add_config_args(rp)
        rp.add_argument("--name", help="registered model (default: mlflow.registered_model)")
        if name in ("show", "promote"):
            rp.add_argument("version", help="version number" + (" or alias" if name == "show" else ""))
        if name == "promote":
            rp.add_argument("--force", action="store_true", help="promote without comparing")
        if name == "rollback":
            rp.add_argument("--to", help="a version to make champion")
        if name == "compare":
            rp.add_argument("--metric", action="append", metavar="NAME",
                            help="a metric to compare (a version's metric.<NAME> tag; repeatable; default: "
                            "map50_all, map50_seen, map50_unseen)")
            rp.add_argument("--out", metavar="PNG", help="where to write the plot (default: ./<model>-versions.png)")
        rp.set_defaults(func=cmd_registry, action=name)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def read_tsv(path: str, columns: int, what: str) -> list[list[str]]:
    from pipelines import storage

    rows = []
    for n, line in enumerate(storage.read_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < columns:
            raise PredictError(f"{path}, line {n}: expected {columns} tab-separated fields ({what}), got {len(parts)}")
        rows.append(parts)
    return rows


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.evaluate.stage import run_evaluate
    from pipelines.layout import EVALUATE, Layout

    cfg = load_cli_config(args)
    layout = Layout.of(cfg.storage)
    shards = args.shards or layout.splits_for(EVALUATE)
    if not shards:
        raise PipelineError(f"evaluate: no committed evaluation shards (imagenet_det-val) under "
                            f"{storage.redact_uri(layout.shards)}; run `y9k ingest` first or pass --shards")
    if args.classes:
        classes = [(r[0], r[1], r[2]) for r in read_tsv(args.classes, 3, "wnid, id, name")]
    else:
        from wordtree_build.labelmaps import load_det200

        classes = load_det200()
    split = {r[0]: r[1] for r in read_tsv(args.split, 2, "wnid, seen|unseen")} if args.split else None
    out = args.out or layout.eval_dir(os.path.basename(shards[0].rstrip("/")))
    res = run_evaluate(cfg.eval, cfg.ray, cfg.mlflow, args.model, shards, None, classes, out,
                       storage_options=cfg.storage.options, split=split, run_id=args.run_id)
    for k, v in res.metrics.items():
        print(f"{k}: {int(v)}" if float(v).is_integer() and not k.startswith("map") else f"{k}: {v:.4f}")
    print(f"per-class table, curves and images: {storage.redact_uri(res.out_uri)} (MLflow run {res.run_id})")
    return 0


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def expand_images(items: Sequence[str]) -> list[str]:
    """Files as given; directories and URIs of directories expanded to their image files (sorted)."""
    from pipelines import storage

    out = []
    for item in items:
        fs, path = storage.filesystem(item)
        if not fs.exists(path):
            raise PredictError(f"--images: {storage.redact_uri(item)} does not exist")
        if fs.isdir(path):
            found = [u for u in storage.list_files(item) if u.lower().endswith(IMAGE_SUFFIXES)]
            if not found:
                raise PredictError(f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) under "
                                   f"{storage.redact_uri(item)}")
            out.extend(found)
        else:
            out.append(item)
    return out


def _darknet_detector(args: argparse.Namespace) -> tuple[Any, list[str], list[str], list[str]]:
    """(Detector, wnids, names, labels) from darknet --cfg/--weights (+ --tree, --names)."""
    from pipelines.inference import Detector, hierarchical_label
    from yolo_core.darknet_cfg import model_from_cfg
    from yolo_core.weights import load_weights

    if not args.weights:
        raise PredictError("--cfg needs --weights (a darknet .weights file)")
    for opt in ("cfg", "weights", "tree", "names"):
        path = getattr(args, opt)
        if path and not Path(path).is_file():
            raise PredictError(f"--{opt} {path}: no such file")
    model = model_from_cfg(args.cfg)
    if not model.is_detector:
        raise PredictError(f"{args.cfg}: not a detector (no [region] or [detection] layer)")
    load_weights(model, args.weights)
    tree = None
    if args.tree:
        from yolo_core.tree import Tree

        tree = Tree.load(args.tree)
        if tree.num_nodes != model.num_classes:
            raise PredictError(f"{args.tree}: {tree.num_nodes} nodes, but {args.cfg} has {model.num_classes} classes")
    elif model.tree_path:
        raise PredictError(f"{args.cfg}: the region layer uses a tree ({model.tree_path}); pass it with --tree")
    n = model.num_classes
    if args.names:
        names = Path(args.names).read_text().splitlines()[:n]
        if len(names) != n:
            raise PredictError(f"{args.names}: {len(names)} names for {n} classes")
    else:
        names = list(getattr(tree, "wnids", None) or [str(k) for k in range(n)])
    wnids = list(getattr(tree, "wnids", None) or names) if tree is not None else list(names)
    if tree is not None:
        parents = tree.parent.tolist()
        labels = [hierarchical_label(k, names, parents) for k in range(n)]
    else:
        labels = list(names)
    v1 = model.detection is not None
    if v1 and args.input_size and args.input_size != model.net.width:
        raise PredictError(f"--input-size {args.input_size}: {args.cfg} is a YOLOv1 network, its input is fixed at "
                           f"{model.net.width}x{model.net.height}")
    size = args.input_size or model.net.width
    thresh, nms = (DARKNET_V1_THRESH, DARKNET_V1_NMS) if v1 else (DARKNET_THRESH, DARKNET_NMS)
    det = Detector(model, tree, input_size=size,
                   thresh=thresh if args.thresh is None else args.thresh,
                   hier_thresh=DARKNET_HIER_THRESH if args.hier_thresh is None else args.hier_thresh,
                   nms=nms if args.nms is None else args.nms,
                   compound=(args.tree_decode or "darknet") == "darknet", backend=args.backend,
                   precision=args.precision)
    return det, wnids, names, labels


def cmd_predict(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.inference import open_image

    if args.batch_size < 1:
        raise PredictError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.model:
        from pipelines.registry import fail_fast_http, load_pyfunc

        fail_fast_http()
        pf = load_pyfunc(args.model, backend=args.backend, precision=args.precision)
        det, wnids, names, labels = pf.detector, pf.wnids, pf.names, pf.labels
        if args.tree_decode:
            det.compound = args.tree_decode == "darknet"
        for opt in ("thresh", "hier_thresh", "nms"):
            if getattr(args, opt) is not None:
                setattr(det, opt, getattr(args, opt))
        if args.input_size:
            det.input_size = args.input_size
    else:
        det, wnids, names, labels = _darknet_detector(args)
    if det.input_size % 32 and getattr(det.model, "detection", None) is None:
        raise PredictError(f"--input-size {det.input_size} is not a multiple of 32")
    files = expand_images(args.images)
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    progress = Progress("predict", len(files), every=PROGRESS_EVERY)  # on stderr: stdout may be the output
    # Drawing needs the full-size image; otherwise JPEGs decode at reduced size where the letterbox shrinks them.
    reduce_to = None if args.draw else det.decode_size
    try:
        for start in range(0, len(files), args.batch_size):
            batch = files[start:start + args.batch_size]
            images = [open_image(storage.read_bytes(uri), storage.redact_uri(uri), reduce_to) for uri in batch]
            for uri, img, d in zip(batch, images, det(images)):
                _write_prediction(out, uri, img, d, wnids, names, labels)
                if args.draw:
                    _draw(args.draw, uri, img, d, labels)
            progress.update(len(batch))
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    print(f"{len(files)} images -> {args.out if args.out != '-' else 'stdout'}"
          + (f", drawn into {args.draw}" if args.draw else ""), file=sys.stderr)
    return 0


def _write_prediction(out: Any, uri: str, img: Any, d: Any, wnids: list[str], names: list[str],
                      labels: list[str]) -> None:
    from pipelines import storage
    from pipelines.inference import original_size

    width, height = original_size(img)
    rec = {"image": storage.redact_uri(uri), "width": width, "height": height, "detections": [
        {"wnid": wnids[c], "name": names[c], "label": labels[c], "score": round(float(s), 6),
         "box": [round(float(v), 2) for v in b]} for b, s, c in zip(d.boxes, d.scores, d.classes)]}
    out.write(json.dumps(rec) + "\n")


def _draw(out_dir: str, uri: str, img: Any, d: Any, labels: list[str]) -> None:
    from pipelines.evaluate.plots import draw_detections

    os.makedirs(out_dir, exist_ok=True)
    drawn = draw_detections(img, d.boxes, d.scores, [labels[c] for c in d.classes], keys=d.classes)
    drawn.save(os.path.join(out_dir, f"{Path(uri.rstrip('/')).stem}.jpg"), quality=90)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from yolo_core.inference import OnnxRuntimeModel, export_onnx, onnxruntime_available

    if args.model:
        from pipelines.registry import load_pyfunc

        det = load_pyfunc(args.model, backend="torch").detector
        model, size = det.model.cpu(), args.input_size or det.input_size
    else:
        from yolo_core.darknet_cfg import model_from_cfg
        from yolo_core.weights import load_weights

        if not args.weights:
            raise PredictError("--cfg needs --weights (a darknet .weights file)")
        model = model_from_cfg(args.cfg)
        load_weights(model, args.weights)
        size = args.input_size or model.net.width
    if size % 32:
        raise PredictError(f"--input-size {size} is not a multiple of 32")
    export_onnx(model.eval(), args.out, size)
    note = "not checked (onnxruntime is not installed)"
    if onnxruntime_available():
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = model(x)
        got = OnnxRuntimeModel(args.out, model)(x)
        dev = float((got - want).abs().max() / want.abs().max())
        if dev > 1e-4:
            raise PredictError(f"{args.out}: ONNX Runtime differs from the torch model by {dev:.2e} (relative)")
        note = f"checked with ONNX Runtime: max relative difference {dev:.1e}"
    print(f"{args.out}: ONNX, input 'images' (batch, 3, height, width), output 'raw'; {note}")
    return 0


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def cmd_registry(args: argparse.Namespace) -> int:
    from pipelines import registry

    cfg = load_cli_config(args)
    registry.fail_fast_http()
    uri = cfg.mlflow.resolved_tracking_uri()
    name = args.name or cfg.mlflow.registered_model
    metric = cfg.mlflow.promote_metric
    if args.action == "list":
        rows = registry.list_versions(name, uri)
        print(f"{'version':>7}  {'aliases':<22} {'status':<8} {metric:<12} run")
        for r in rows:
            val = r["metrics"].get(metric, "")
            print(f"{r['version']:>7}  {','.join(r['aliases']) or '-':<22} {r['status']:<8} {val:<12} {r['run_id']}")
    elif args.action == "show":
        print(json.dumps(registry.show_version(name, args.version, uri), indent=2, sort_keys=True))
    elif args.action == "promote":
        d = registry.promote_if_better(name, args.version, metric, cfg.mlflow.promote_margin, force=args.force,
                                       tracking_uri=uri, trigger="y9k registry promote")
        print(f"{name} version {d.version}: {'promoted to champion' if d.promoted else 'not promoted'} ({d.reason})")
        return 0 if d.promoted else 1
    elif args.action == "compare":
        from pipelines import versions

        cmp = versions.compare(name, uri, args.metric or versions.DEFAULT_METRICS)
        print(versions.table(cmp))
        out = args.out or f"{name}-versions.png"
        Path(out).write_bytes(versions.png_bytes(versions.plot(cmp)))
        print(f"plot: {out}")
    elif args.action == "history":
        from pipelines import versions

        print(versions.history(name, uri))
    else:
        v = registry.rollback(name, args.to, uri, trigger="y9k registry rollback")
        print(f"{name}: champion is now version {v}")
    return 0
