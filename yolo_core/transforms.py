"""Image transforms in torch / numpy / Pillow: darknet's letterbox and training augmentation.

* ``resize``: darknet's plain ``resize_image`` (YOLOv1's test path: the aspect ratio is not kept).
* ``letterbox``: HEAD test-time resize: keep the aspect ratio, scale to fit the network input
  (sizes rounded down as darknet's integer arithmetic does), bilinear with
  ``align_corners=True`` (darknet's ``resize_image``), centred at integer offsets on a 0.5
  grey canvas. ``letterbox_boxes`` / ``unletterbox_boxes`` map boxes between original pixels
  and fractions of the network input.
* ``augment``: training augmentation. ``mode='place'`` (HEAD): the aspect ratio is jittered by
  up to ``jitter`` of each side, the image is scaled to fill the canvas along its longer side
  and placed at a random position on grey. ``mode='crop'`` (J17): each side is cropped (or
  padded with grey) by up to ``jitter`` of the image size and the window is stretched to the
  canvas. Then a horizontal flip with probability .5, and HSV distortion in darknet's ranges
  (hue + U(-hue, hue), saturation and exposure times U(1, s) or its inverse). Boxes move with
  the image; they are clipped to the canvas and dropped only when less than .001 of the
  canvas remains in width or height (darknet's rule), which only happens in ``'crop'`` mode.

Images are float tensors (3, H, W) in [0, 1]; boxes are float tensors. Box formats: see each
function (cxcywh fractions for training targets, as in the shards; xyxy for detections).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from yolo_core.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

GREY = .5


class TransformError(ValueError):
    """Input that a transform cannot use; the message names the argument and value."""

    user_facing = True


@dataclass(frozen=True)
class LetterboxInfo:
    """Where the original image lies in the letterboxed network input (pixels)."""

    orig_w: int
    orig_h: int
    net_w: int
    net_h: int
    new_w: int  # size of the resized image inside the canvas
    new_h: int
    dx: int  # left / top offset of the resized image
    dy: int


class Augmented(NamedTuple):
    image: Tensor  # (3, H, W) float in [0, 1]
    boxes: Tensor  # (K, 4) cxcywh fractions of the output canvas
    kept: Tensor  # (K,) indices of the input boxes that were kept, in order
    dropped: int  # boxes that left the canvas


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    """An int or (width, height) -> (width, height), both positive."""
    w, h = (size, size) if isinstance(size, int) else size
    if w <= 0 or h <= 0:
        raise TransformError(f"output size must be positive, got {size!r}")
    return int(w), int(h)


def to_tensor(img: Image.Image) -> Tensor:
    """A Pillow image as RGB float (3, H, W) in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def letterbox(img: Image.Image, size: int | tuple[int, int]) -> tuple[Tensor, LetterboxInfo]:
    """Darknet's ``letterbox_image``: (3, net_h, net_w) tensor and where the image went."""
    net_w, net_h = _size(size)
    w, h = img.size
    # Darknet compares the two scale factors and rounds the other side down.
    if net_w / w < net_h / h:
        new_w, new_h = net_w, max(1, (h * net_w) // w)
    else:
        new_w, new_h = max(1, (w * net_h) // h), net_h
    resized = F.interpolate(to_tensor(img)[None], size=(new_h, new_w), mode="bilinear", align_corners=True)[0]
    dx, dy = (net_w - new_w) // 2, (net_h - new_h) // 2
    canvas = torch.full((3, net_h, net_w), GREY)
    canvas[:, dy:dy + new_h, dx:dx + new_w] = resized.clamp(0, 1)
    return canvas, LetterboxInfo(w, h, net_w, net_h, new_w, new_h, dx, dy)


def resize(img: Image.Image, size: int | tuple[int, int]) -> Tensor:
    """Darknet's ``resize_image`` to the network input, no letterbox (YOLOv1's test path):
    bilinear with ``align_corners=True``; box fractions of the output are fractions of ``img``."""
    net_w, net_h = _size(size)
    return F.interpolate(to_tensor(img)[None], size=(net_h, net_w), mode="bilinear", align_corners=True)[0]


def letterbox_boxes(boxes: Tensor, info: LetterboxInfo) -> Tensor:
    """xyxy boxes in original-image pixels -> xyxy fractions of the letterboxed input."""
    b = torch.as_tensor(boxes, dtype=torch.float32)
    sx, sy = info.new_w / info.orig_w, info.new_h / info.orig_h
    scale = b.new_tensor([sx / info.net_w, sy / info.net_h] * 2)
    shift = b.new_tensor([info.dx / info.net_w, info.dy / info.net_h] * 2)
    return b * scale + shift


def unletterbox_boxes(boxes: Tensor, info: LetterboxInfo, darknet_offsets: bool = False) -> Tensor:
    """xyxy fractions of the letterboxed input -> xyxy pixels of the original image.

    The exact inverse of ``letterbox_boxes``. Darknet's ``correct_region_boxes`` subtracts
    the unrounded offset (net - new) / 2 although the image was placed at the rounded-down
    one; ``darknet_offsets=True`` reproduces its numbers (at most half a pixel apart).
    """
    b = torch.as_tensor(boxes, dtype=torch.float32)
    dx, dy = ((info.net_w - info.new_w) / 2, (info.net_h - info.new_h) / 2) if darknet_offsets \
        else (info.dx, info.dy)
    shift = b.new_tensor([dx, dy] * 2)
    scale = b.new_tensor([info.orig_w / info.new_w, info.orig_h / info.new_h] * 2)
    return (b * b.new_tensor([info.net_w, info.net_h] * 2) - shift) * scale


def _rgb_to_hsv(x: Tensor) -> Tensor:
    """Darknet's rgb_to_hsv with hue in [0, 1); grey pixels get hue 0 (darknet: NaN)."""
    r, g, b = x.unbind(0)
    mx, mn = x.amax(0), x.amin(0)
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(r == mx, (g - b) / safe, torch.where(g == mx, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    h = torch.where(h < 0, h + 6, h) / 6
    s = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack((h, s, mx))


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(0)
    h6 = h * 6
    sector = torch.floor(h6)
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # Darknet's six cases, as (r, g, b) per sector.
    table = torch.stack((torch.stack((v, t, p)), torch.stack((q, v, p)), torch.stack((p, v, t)),
                         torch.stack((p, q, v)), torch.stack((t, p, v)), torch.stack((v, p, q))))
    idx = (sector.long() % 6).expand(1, 3, *h.shape)
    rgb = table.gather(0, idx)[0]
    return torch.where(s == 0, v.expand(3, *v.shape), rgb)


def distort_hsv(x: Tensor, dhue: float, dsat: float, dexp: float) -> Tensor:
    """Darknet's ``distort_image``: shift hue (wrapping), scale saturation and value, clamp."""
    hsv = _rgb_to_hsv(x)
    h = hsv[0] + dhue
    h = torch.where(h > 1, h - 1, torch.where(h < 0, h + 1, h))
    return _hsv_to_rgb(torch.stack((h, hsv[1] * dsat, hsv[2] * dexp))).clamp(0, 1)


def _rand_scale(s: float, rng: np.random.Generator) -> float:
    """Darknet's rand_scale: U(1, s), inverted with probability .5."""
    scale = rng.uniform(1, s) if s > 1 else 1.
    return scale if rng.integers(2) else 1. / scale


def augment(img: Image.Image, boxes: Tensor, out_size: int | tuple[int, int], jitter: float = .2,
            hue: float = .1, saturation: float = 1.5, exposure: float = 1.5, flip: bool = True,
            rng: np.random.Generator | None = None, mode: Literal["place", "crop"] = "place") -> Augmented:
    """One augmented training sample. ``boxes`` (N, 4) cxcywh fractions of ``img``."""
    if not 0 <= jitter < .5:
        raise TransformError(f"jitter must be in [0, 0.5), got {jitter!r}")
    if saturation < 1 or exposure < 1 or hue < 0:
        raise TransformError(f"need hue >= 0 and saturation, exposure >= 1 (darknet's ranges), got "
                             f"hue={hue!r}, saturation={saturation!r}, exposure={exposure!r}")
    if mode not in ("place", "crop"):
        raise TransformError(f"mode must be 'place' or 'crop', got {mode!r}")
    b = torch.as_tensor(boxes, dtype=torch.float32)
    b = b.reshape(0, 4) if b.numel() == 0 else b
    if b.ndim != 2 or b.shape[1] != 4 or not bool(torch.isfinite(b).all()):
        raise TransformError(f"boxes must be finite (N, 4) cxcywh fractions, got {b.tolist()}")
    rng = rng if rng is not None else np.random.default_rng()
    out_w, out_h = _size(out_size)
    src = to_tensor(img)
    ow, oh = img.size
    xyxy = cxcywh_to_xyxy(b)

    if mode == "place":
        new_ar = (ow + rng.uniform(-jitter * ow, jitter * ow)) / (oh + rng.uniform(-jitter * oh, jitter * oh))
        # Fill the canvas along the longer side (darknet's scale = 1).
        if new_ar < out_w / out_h:
            nw, nh = max(1, int(out_h * new_ar)), out_h
        else:
            nw, nh = out_w, max(1, int(out_w / new_ar))
        dx, dy = int(rng.uniform(0, out_w - nw)), int(rng.uniform(0, out_h - nh))
        image = torch.full((3, out_h, out_w), GREY)
        image[:, dy:dy + nh, dx:dx + nw] = _resize(src, nw, nh)
        xyxy = (xyxy * xyxy.new_tensor([nw, nh] * 2) + xyxy.new_tensor([dx, dy] * 2)) \
            / xyxy.new_tensor([out_w, out_h] * 2)
    else:
        dw, dh = int(ow * jitter), int(oh * jitter)
        left, right = int(rng.uniform(-dw, dw)), int(rng.uniform(-dw, dw))
        top, bottom = int(rng.uniform(-dh, dh)), int(rng.uniform(-dh, dh))
        sw, sh = ow - left - right, oh - top - bottom
        # The window, with grey where it reaches beyond the image.
        window = torch.full((3, sh, sw), GREY)
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + sw, ow), min(top + sh, oh)
        window[:, y0 - top:y1 - top, x0 - left:x1 - left] = src[:, y0:y1, x0:x1]
        image = _resize(window, out_w, out_h)
        xyxy = (xyxy * xyxy.new_tensor([ow, oh] * 2) - xyxy.new_tensor([left, top] * 2)) \
            / xyxy.new_tensor([sw, sh] * 2)

    if flip and rng.integers(2):
        image = image.flip(-1)
        xyxy = torch.stack((1 - xyxy[:, 2], xyxy[:, 1], 1 - xyxy[:, 0], xyxy[:, 3]), dim=1)
    dhue = rng.uniform(-hue, hue) if hue > 0 else 0.
    image = distort_hsv(image, dhue, _rand_scale(saturation, rng), _rand_scale(exposure, rng))

    xyxy = xyxy.clamp(0, 1)
    out = xyxy_to_cxcywh(xyxy)
    keep = (out[:, 2] >= .001) & (out[:, 3] >= .001)
    kept = keep.nonzero(as_tuple=True)[0]
    return Augmented(image, out[kept], kept, int((~keep).sum()))


def _resize(x: Tensor, w: int, h: int) -> Tensor:
    """Bilinear resize of (3, H, W), antialiased when shrinking."""
    out = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out[0].clamp(0, 1)
