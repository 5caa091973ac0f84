"""`y9k predict` written plainly, for bench_inference.py: the baseline of the end-to-end timing.

    python _plain_predict.py CFG WEIGHTS IMAGE_DIR OUT.jsonl SIZE

The same steps as `y9k predict --cfg --weights` (darknet's defaults: thresh .5, per-class NMS at
.45), written as a careful user would with plain PyTorch and Pillow: full JPEG decode,
letterbox with Pillow's bilinear resize onto a grey canvas, the plain-torch network of the
benchmark (batch norm folded, channels_last) in batches of 8 under inference_mode, region
decode, greedy per-class NMS, boxes mapped back, one JSON line per image. The cfg and
weights are read with yolo_core's parsers (file formats, not the steps compared).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.bench_inference import PlainYolov2  # noqa: E402
from yolo_core.darknet_cfg import model_from_cfg  # noqa: E402
from yolo_core.weights import load_weights  # noqa: E402

THRESH, NMS, BATCH = 0.5, 0.45, 8


def letterbox(img: Image.Image, size: int) -> tuple[np.ndarray, float, int, int]:
    w, h = img.size
    r = min(size / w, size / h)
    nw, nh = int(w * r), int(h * r)
    canvas = Image.new("RGB", (size, size), (127, 127, 127))
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (dx, dy))
    return np.asarray(canvas), r, dx, dy


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(a[:, None, :2], b[None, :, :2]), torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor) -> list[int]:
    order = scores.argsort(descending=True)
    overlaps = iou(boxes[order], boxes[order]) > NMS
    keep, removed = [], torch.zeros(len(order), dtype=torch.bool)
    for k in range(len(order)):
        if not removed[k]:
            keep.append(int(order[k]))
            removed |= overlaps[k]
    return keep


def main() -> None:
    cfg, weights, image_dir, out_path, size = sys.argv[1:6]
    size = int(size)
    model = model_from_cfg(cfg)
    load_weights(model, weights)
    anchors = model.anchors.clone()
    num_anchors, num_classes = anchors.shape[0], model.num_classes
    net = PlainYolov2(model.state_dict()).eval().to(memory_format=torch.channels_last)
    files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with open(out_path, "w") as out, torch.inference_mode():
        for start in range(0, len(files), BATCH):
            batch = files[start:start + BATCH]
            images = [Image.open(f).convert("RGB") for f in batch]
            boxed = [letterbox(img, size) for img in images]
            x = torch.from_numpy(np.stack([b[0] for b in boxed])).permute(0, 3, 1, 2).float().div_(255)
            raw = net(x.contiguous(memory_format=torch.channels_last))
            b, _, gh, gw = raw.shape
            v = raw.reshape(b, num_anchors, 5 + num_classes, gh, gw).permute(0, 1, 3, 4, 2)
            gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
            cx = (gx + v[..., 0].sigmoid()) / gw * size
            cy = (gy + v[..., 1].sigmoid()) / gh * size
            bw = anchors[:, 0, None, None] * v[..., 2].exp() / gw * size
            bh = anchors[:, 1, None, None] * v[..., 3].exp() / gh * size
            scores = v[..., 4:5].sigmoid() * v[..., 5:].softmax(-1)
            for k, (f, img, (_, r, dx, dy)) in enumerate(zip(batch, images, boxed)):
                cell, cls = (scores[k] > THRESH).reshape(-1, num_classes).nonzero(as_tuple=True)
                xyxy = torch.stack([cx[k].flatten() - bw[k].flatten() / 2, cy[k].flatten() - bh[k].flatten() / 2,
                                    cx[k].flatten() + bw[k].flatten() / 2, cy[k].flatten() + bh[k].flatten() / 2], 1)
                xyxy, sc = xyxy[cell], scores[k].reshape(-1, num_classes)[cell, cls]
                dets = []
                for c in cls.unique().tolist():
                    idx = (cls == c).nonzero()[:, 0]
                    for j in nms(xyxy[idx], sc[idx]):
                        bx = (xyxy[idx[j]] - torch.tensor([dx, dy, dx, dy])) / r
                        dets.append({"name": str(c), "score": round(float(sc[idx[j]]), 6),
                                     "box": [round(float(t), 2) for t in bx]})
                dets.sort(key=lambda d: -d["score"])
                out.write(json.dumps({"image": str(f), "width": img.width, "height": img.height,
                                      "detections": dets}) + "\n")


if __name__ == "__main__":
    main()
