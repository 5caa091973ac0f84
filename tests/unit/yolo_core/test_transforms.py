"""Letterbox and its inverse, HSV distortion, and augmentation that keeps boxes on the objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.conftest import shared_path
from yolo_core.transforms import (
    TransformError,
    augment,
    distort_hsv,
    letterbox,
    letterbox_boxes,
    to_tensor,
    unletterbox_boxes,
)

RED, GREEN = (255, 0, 0), (0, 255, 0)


def scene(size: tuple[int, int], rects: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]) -> Image.Image:
    """A black image with filled rectangles (x1, y1, x2, y2 inclusive pixel corners)."""
    img = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for box, colour in rects:
        draw.rectangle(box, fill=colour)
    return img


def to_cxcywh(box: tuple[int, int, int, int], size: tuple[int, int]) -> list[float]:
    """Inclusive pixel corners -> cxcywh fractions of the image (pixel edges)."""
    x1, y1, x2, y2 = box[0], box[1], box[2] + 1, box[3] + 1
    return [(x1 + x2) / 2 / size[0], (y1 + y2) / 2 / size[1], (x2 - x1) / size[0], (y2 - y1) / size[1]]


def colour_mask(img: torch.Tensor, which: str) -> torch.Tensor:
    """Pixels that are clearly red or clearly green (black and grey have no saturation)."""
    r, g, b = img
    sat = img.amax(0) - img.amin(0)
    dominant = r > g if which == "red" else g > r
    return (sat > .25) & dominant & (b < img.amax(0))


def test_letterbox_follows_darknet_integer_arithmetic() -> None:
    img = Image.new("RGB", (640, 480), (255, 0, 0))
    x, info = letterbox(img, 416)
    assert x.shape == (3, 416, 416)
    # 416 / 640 < 416 / 480: full width, height 480 * 416 // 640 = 312, centred at (416 - 312) // 2.
    assert (info.new_w, info.new_h, info.dx, info.dy) == (416, 312, 0, 52)
    assert torch.all(x[:, :52] == .5) and torch.all(x[:, 52 + 312:] == .5)
    assert torch.allclose(x[:, 52:52 + 312], torch.tensor([1., 0., 0.]).view(3, 1, 1).expand(3, 312, 416))
    tall = letterbox(Image.new("RGB", (101, 333)), (320, 256))[1]
    assert (tall.new_w, tall.new_h, tall.dx, tall.dy) == (101 * 256 // 333, 256, (320 - 101 * 256 // 333) // 2, 0)


def test_letterbox_resize_is_bilinear_with_aligned_corners() -> None:
    img = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("RGB")  # 2 x 1
    x, info = letterbox(img, (5, 5))
    row = x[0, info.dy]
    assert row.tolist() == pytest.approx([0., .25, .5, .75, 1.])  # corners map onto corners


def darknet_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet's resize_image (image.c), float32, vectorized over rows and columns only where
    the C code's loops are independent: a horizontal pass, then a vertical one."""
    c, ih, iw = im.shape
    w_scale = np.float32(iw - 1) / np.float32(w - 1)
    h_scale = np.float32(ih - 1) / np.float32(h - 1)
    part = np.empty((c, ih, w), np.float32)
    for col in range(w):
        if col == w - 1 or iw == 1:
            part[:, :, col] = im[:, :, iw - 1]
        else:
            sx = np.float32(col) * w_scale
            ix = int(sx)
            dx = np.float32(sx - np.float32(ix))
            part[:, :, col] = (np.float32(1) - dx) * im[:, :, ix] + dx * im[:, :, ix + 1]
    out = np.empty((c, h, w), np.float32)
    for r in range(h):
        sy = np.float32(r) * h_scale
        iy = int(sy)
        dy = np.float32(sy - np.float32(iy))
        out[:, r] = (np.float32(1) - dy) * part[:, iy]
        if r == h - 1 or ih == 1:
            continue
        out[:, r] += dy * part[:, iy + 1]
    return out


def test_letterbox_matches_darknet_resize_on_a_real_photo() -> None:
    img = Image.open(shared_path("darknet", "dog.jpg"))
    x, info = letterbox(img, 416)
    expected = darknet_resize(to_tensor(img).numpy(), info.new_w, info.new_h)
    inside = x[:, info.dy:info.dy + info.new_h, info.dx:info.dx + info.new_w]
    assert np.abs(inside.numpy() - expected).max() < 1e-5


@pytest.mark.parametrize("size, net", [((640, 480), 416), ((333, 500), 416), ((97, 31), (320, 224)), ((50, 50), 64)])
def test_letterbox_box_round_trip(size: tuple[int, int], net) -> None:
    _, info = letterbox(Image.new("RGB", size), net)
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=gen) * torch.tensor(size) * .7
    boxes = torch.cat([xy, xy + torch.rand(20, 2, generator=gen) * torch.tensor(size) * .3], 1)
    inside = letterbox_boxes(boxes, info)
    assert torch.allclose(unletterbox_boxes(inside, info), boxes, atol=1e-3)
    # Darknet's own inverse uses the unrounded offset: at most half a network pixel away.
    darknet = unletterbox_boxes(inside, info, darknet_offsets=True)
    assert torch.all((darknet - boxes).abs() <= .5 * max(info.orig_w / info.new_w, info.orig_h / info.new_h) + 1e-3)


def test_letterboxed_box_covers_the_object() -> None:
    rect = (200, 100, 399, 219)
    img = scene((640, 360), [(rect, RED)])
    x, info = letterbox(img, 320)
    x1, y1, x2, y2 = (letterbox_boxes(torch.tensor([[200., 100., 400., 220.]]), info)[0] * 320).tolist()
    red = colour_mask(x, "red")
    ys, xs = red.nonzero(as_tuple=True)
    assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2
    assert red[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1].all()


def test_hsv_distortion_by_hand() -> None:
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(distort_hsv(x, 0., 1., 1.), x, atol=1e-6)
    red = torch.tensor([1., 0., 0.]).view(3, 1, 1)
    assert torch.allclose(distort_hsv(red, 1 / 3, 1., 1.), torch.tensor([0., 1., 0.]).view(3, 1, 1), atol=1e-6)
    assert torch.allclose(distort_hsv(red, -1 / 3, 1., 1.), torch.tensor([0., 0., 1.]).view(3, 1, 1), atol=1e-6)
    grey = torch.full((3, 1, 1), .5)
    assert torch.allclose(distort_hsv(grey, .1, 1.5, 1.5), torch.full((3, 1, 1), .75))  # grey keeps no hue
    half = torch.tensor([1., .5, .5]).view(3, 1, 1)  # s = .5: saturation x2 -> pure red, exposure clamps
    assert torch.allclose(distort_hsv(half, 0., 2., 1.), red, atol=1e-6)
    assert torch.allclose(distort_hsv(half, 0., 1., 2.), torch.ones(3, 1, 1))


@pytest.mark.parametrize("mode", ["place", "crop"])
def test_augmented_boxes_stay_on_their_objects(mode: str) -> None:
    size = (300, 200)
    rects = [((20, 30, 119, 99), RED), ((180, 110, 279, 189), GREEN)]
    img = scene(size, rects)
    boxes = torch.tensor([to_cxcywh(r, size) for r, _ in rects])
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(12):
        out = augment(img, boxes, 96, jitter=.3, hue=.1, saturation=1.5, exposure=1.5, flip=True, rng=rng, mode=mode)
        assert out.image.shape == (3, 96, 96) and out.image.min() >= 0 and out.image.max() <= 1
        assert out.dropped + len(out.kept) == 2
        for which, k in (("red", 0), ("green", 1)):
            mask = colour_mask(out.image, which)
            if k not in out.kept.tolist():
                assert mask.sum() <= 2  # dropped: the object left the canvas
                continue
            cx, cy, w, h = (out.boxes[out.kept.tolist().index(k)] * 96).tolist()
            ys, xs = mask.nonzero(as_tuple=True)
            # Every pixel of the colour is inside its box (1 px of interpolation blur) ...
            assert xs.min() >= cx - w / 2 - 1.5 and xs.max() <= cx + w / 2 + .5
            assert ys.min() >= cy - h / 2 - 1.5 and ys.max() <= cy + h / 2 + .5
            # ... and the box interior is that colour.
            inner = mask[int(cy - h / 2) + 2:int(cy + h / 2) - 2, int(cx - w / 2) + 2:int(cx + w / 2) - 2]
            assert inner.float().mean() > .95
        flips += int(colour_mask(out.image, "red").nonzero()[:, 1].float().mean()
                     > colour_mask(out.image, "green").nonzero()[:, 1].float().mean()) \
            if len(out.kept) == 2 else 0
    assert flips > 0  # some samples were mirrored


def test_crop_mode_drops_boxes_that_leave_the_canvas() -> None:
    size = (200, 200)
    edge = ((0, 90, 5, 109), RED)  # a thin object on the left edge
    img = scene(size, [edge])
    boxes = torch.tensor([to_cxcywh(edge[0], size)])
    rng = np.random.default_rng(1)
    results = [augment(img, boxes, 64, jitter=.3, flip=False, rng=rng, mode="crop") for _ in range(20)]
    assert any(r.dropped == 1 for r in results) and any(r.dropped == 0 for r in results)
    for r in results:
        assert r.boxes.shape == (1 - r.dropped, 4)
    # Placement never crops.
    assert all(augment(img, boxes, 64, jitter=.3, rng=rng).dropped == 0 for _ in range(10))


def test_no_augmentation_is_a_plain_resize() -> None:
    img = scene((64, 64), [((10, 10, 29, 49), RED)])
    boxes = torch.tensor([to_cxcywh((10, 10, 29, 49), (64, 64))])
    out = augment(img, boxes, 64, jitter=0., hue=0., saturation=1., exposure=1., flip=False,
                  rng=np.random.default_rng(0))
    assert torch.allclose(out.image, to_tensor(img), atol=1e-5)
    assert torch.allclose(out.boxes, boxes)


@pytest.mark.parametrize("kwargs, message", [
    ({"jitter": .6}, "jitter"), ({"saturation": .5}, "saturation"), ({"mode": "zoom"}, "mode"),
])
def test_bad_arguments_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(TransformError, match=message):
        augment(Image.new("RGB", (8, 8)), torch.zeros(0, 4), 32, **kwargs)
    with pytest.raises(TransformError, match="boxes"):
        augment(Image.new("RGB", (8, 8)), torch.tensor([[.5, .5, float("inf"), .1]]), 32)
