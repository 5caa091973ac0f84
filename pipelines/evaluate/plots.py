"""Evaluation figures: precision-recall curves and images with hierarchically labelled detections.

A YOLO9000 detection is a WordTree node; its label names the node and its nearest ancestors
(``Norfolk terrier < terrier < dog``), which says both what was seen and how sure the tree was
about the coarser concept.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.evaluate.metrics import ClassAP


def _color(key: int) -> tuple[int, int, int]:
    # Golden-ratio hue steps: neighbouring class ids get clearly different colours.
    r, g, b = colorsys.hsv_to_rgb((key * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(img: Any, boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                    keys: Sequence[int] | None = None) -> Any:
    """A copy of a PIL image with boxes (x1, y1, x2, y2 pixels) and '<label> <score>' captions."""
    from PIL import ImageDraw, ImageFont

    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = max(2, round(max(out.size) / 300))
    for i, (box, score, label) in enumerate(zip(np.asarray(boxes), np.asarray(scores), labels)):
        color = _color(int(keys[i]) if keys is not None else i)
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        caption = f"{label} {float(score):.2f}"
        tx, ty, tx2, ty2 = draw.textbbox((x1, y1), caption, font=font)
        ty_off = ty2 - ty + 2
        top = y1 - ty_off if y1 - ty_off >= 0 else y1  # inside the box when the image edge is near
        draw.rectangle([x1, top, x1 + (tx2 - tx) + 4, top + ty_off], fill=color)
        draw.text((x1 + 2, top + 1), caption, fill=(0, 0, 0), font=font)
    return out


def pr_curves(result: ClassAP, class_names: Sequence[str], iou: float = 0.5, max_classes: int = 12,
              title: str = "Precision-recall at IoU .5") -> Any:
    """A matplotlib figure: the mean PR curve over classes with ground truth, plus the best and
    worst classes by AP (at most ``max_classes`` in all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.iou_thrs.index(iou)
    prec = result.precision[:, t, :]  # (K, R)
    ap = result.ap[:, t]
    valid = np.flatnonzero(~np.isnan(ap))
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    if len(valid):
        order = valid[np.argsort(-ap[valid], kind="stable")]
        half = max_classes // 2
        shown = list(order[:half]) + [k for k in order[-half:] if k not in order[:half]]
        for k in shown:
            p = np.where(prec[k] > -1, prec[k], 0.0)
            ax.plot(result.recall_thrs, p, lw=1, alpha=0.8, label=f"{class_names[k]} ({ap[k]:.2f})")
        mean = np.where(prec[valid] > -1, prec[valid], 0.0).mean(0)
        ax.plot(result.recall_thrs, mean, "k", lw=2.5, label=f"mean of {len(valid)} classes ({np.nanmean(ap):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
