"""Synthetic sample datasets in the real on-disk formats, built to exercise YOLO9000's mechanism.

    from pipelines.sample_data import generate
    summary = generate("./y9k-data/sample", seed=0, scale="small")
    print(summary)

Three datasets are written under ``out_uri`` (any fsspec URI):

- ``coco/``: a COCO-style detection set, ``annotations/instances_{train,val}.json`` (real COCO
  category ids and names) and ``images/{train,val}/<id>.jpg``. Objects are *coarse* classes.
- ``imagenet/``: an ImageNet-style classification set, ``train/<wnid>/<wnid>_<n>.JPEG`` (and
  ``LOC_synset_mapping.txt``, like the real devkit file). Classes are *fine* ILSVRC-2012 classes
  below the coarse ones (breeds, species, models) plus a few unrelated ones.
- ``imagenet_det/``: an ImageNet-DET-style validation set, ``Data/DET/val/*.JPEG`` and
  ``Annotations/DET/val/*.xml`` (PASCAL VOC XML, wnids as object names), the class list
  ``det_classes.tsv`` (``wnid<TAB>det_id<TAB>name``, like ``det200_synsets.tsv``) and
  ``seen_unseen.tsv`` (``wnid<TAB>seen|unseen``), the ground truth of the design.

The mechanism: every coarse class has its own shape; a fine class is its coarse class's shape
with its own texture and colour. COCO-style boxes carry coarse labels only, whatever the object
looks like: like COCO's "dog" boxes, which hold every breed, a coarse object is drawn either with
a dull random fill (an instance of none of the listed fine classes) or with the look of one of
its fine classes. A detector learns "where" and the coarse label from those boxes, and the fine
labels only from classification images; the DET-style val set then boxes coarse classes (dull,
"seen": they have detection data) and fine or unrelated classes whose names only classification
data teaches ("unseen"), mirroring the paper's 44 seen / 156 unseen split of ImageNet DET.

Worlds (``world_name``, config ``sample_data.world``): the mechanism above, built twice from
independent parts, so that a training recipe can be checked on more than the one world it was
tuned on. ``zoo`` (the default): cars, buses, birds, dogs, elephants, bears and their ILSVRC
breeds / species / models, plus an orange, a soccer ball and a laptop. ``depot``: trucks, boats,
ties, sports balls, bottles, chairs and their ILSVRC kinds (half of them DET-200 classes), plus
a ladybug, a lemon and a hammer; other shapes, smaller and more elongated and rotated objects,
more of them per image, banded backgrounds with box-like clutter, and other image shapes.

Everything is deterministic for a seed: each image draws from its own numpy generator seeded by
(seed, world and set, index), and JPEGs use fixed encoder settings, so the same seed gives the
same bytes. A ``sample_data.json`` marker is written first (incomplete) and last (complete): a
finished output with the same world, seed and scale is reused, any other output of ours is replaced, and a
directory holding data we did not write is never touched.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipelines import storage
from pipelines.errors import PipelineError
from pipelines.layout import DET_CLASSES_FILE, SAMPLE_DATA

# ---------------------------------------------------------------------------------------------
# The design, in one table.
#
# Coarse classes: real COCO categories (id, name, supercategory) whose WordNet synset is also an
# ILSVRC DET-200 class (the same wnid darknet's coco9k.map gives the COCO name), each with
# several ILSVRC-2012 hyponyms. COCO "cat" is left out on purpose: darknet maps it to cat.n.01
# (n02121620) while DET-200 uses domestic_cat.n.01 (n02121808), and COCO "airplane" has only
# one ILSVRC-1k hyponym (warplane.n.01 is not below airplane.n.01 in WordNet).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoarseClass:
    coco_id: int
    name: str
    supercategory: str
    wnid: str
    shape: str


@dataclass(frozen=True)
class FineClass:
    """An ILSVRC-2012 class: below `coarse` in WordNet, or unrelated (coarse None, own shape)."""

    wnid: str
    name: str
    coarse: str | None
    pattern: str
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    shape: str = ""  # only for unrelated classes; a hyponym draws its coarse class's shape


COARSE: tuple[CoarseClass, ...] = (
    CoarseClass(3, "car", "vehicle", "n02958343", "rectangle"),
    CoarseClass(6, "bus", "vehicle", "n02924116", "cross"),
    CoarseClass(16, "bird", "animal", "n01503061", "triangle"),
    CoarseClass(18, "dog", "animal", "n02084071", "ellipse"),
    CoarseClass(22, "elephant", "animal", "n02503517", "star"),
    CoarseClass(23, "bear", "animal", "n02131653", "hexagon"),
)

FINE: tuple[FineClass, ...] = (
    FineClass("n04285008", "sports car", "car", "solid", (225, 25, 25), (225, 25, 25)),
    FineClass("n02930766", "cab", "car", "checker", (250, 205, 0), (20, 20, 20)),
    FineClass("n03594945", "jeep", "car", "vstripes", (70, 120, 20), (200, 190, 110)),
    FineClass("n04146614", "school bus", "bus", "solid", (255, 190, 0), (255, 190, 0)),
    FineClass("n04487081", "trolleybus", "bus", "dstripes", (20, 70, 220), (240, 240, 240)),
    FineClass("n01531178", "goldfinch", "bird", "hstripes", (250, 220, 0), (15, 15, 15)),
    FineClass("n02007558", "flamingo", "bird", "solid", (250, 105, 170), (250, 105, 170)),
    FineClass("n01843383", "toucan", "bird", "dots", (15, 15, 15), (255, 140, 0)),
    FineClass("n02085620", "Chihuahua", "dog", "checker", (170, 95, 30), (250, 225, 170)),
    FineClass("n02110341", "dalmatian", "dog", "dots", (245, 245, 245), (10, 10, 10)),
    FineClass("n02099601", "golden retriever", "dog", "solid", (235, 170, 30), (235, 170, 30)),
    FineClass("n02504458", "African elephant", "elephant", "dstripes", (120, 60, 200), (230, 230, 230)),
    FineClass("n02504013", "Indian elephant", "elephant", "dots", (0, 160, 150), (250, 240, 60)),
    FineClass("n02132136", "brown bear", "bear", "solid", (115, 60, 20), (115, 60, 20)),
    FineClass("n02134084", "ice bear", "bear", "vstripes", (250, 250, 250), (140, 200, 250)),
    FineClass("n02133161", "American black bear", "bear", "solid", (20, 20, 20), (20, 20, 20)),
    # Unrelated: not below any coarse class; they exist only in classification data.
    FineClass("n07747607", "orange", None, "solid", (255, 130, 0), (255, 130, 0), shape="ring"),
    FineClass("n04254680", "soccer ball", None, "checker", (245, 245, 245), (10, 10, 10), shape="diamond"),
    FineClass("n03642806", "laptop", None, "hstripes", (160, 165, 175), (40, 40, 50), shape="arrow"),
)

# The "depot" world, built independently of the one above: other COCO categories (things,
# not animals), their own ILSVRC-2012 hyponyms, many of them DET-200 classes (wine bottle, water
# bottle, the balls, bow tie, Windsor tie as DET's "tie"), and an insect, a fruit and a tool
# (ladybug, lemon, hammer: DET-200 classes, classification data only) as unrelated ones.
DEPOT_COARSE: tuple[CoarseClass, ...] = (
    CoarseClass(8, "truck", "vehicle", "n04490091", "truck"),
    CoarseClass(9, "boat", "vehicle", "n04530566", "hull"),
    CoarseClass(32, "tie", "accessory", "n03815615", "kite"),
    CoarseClass(37, "sports ball", "sports", "n02778669", "ball"),
    CoarseClass(44, "bottle", "kitchen", "n02876657", "bottle"),
    CoarseClass(62, "chair", "furniture", "n03001627", "chair"),
)

DEPOT_FINE: tuple[FineClass, ...] = (
    FineClass("n03345487", "fire engine", "truck", "solid", (200, 20, 30), (200, 20, 30)),
    FineClass("n03417042", "garbage truck", "truck", "grid", (40, 120, 60), (220, 220, 220)),
    FineClass("n04461696", "tow truck", "truck", "hstripes", (250, 200, 0), (30, 30, 30)),
    FineClass("n02951358", "canoe", "boat", "solid", (190, 110, 40), (190, 110, 40)),
    FineClass("n04273569", "speedboat", "boat", "dstripes", (245, 245, 245), (0, 90, 200)),
    FineClass("n03447447", "gondola", "boat", "vstripes", (15, 15, 15), (230, 200, 60)),
    FineClass("n02883205", "bow tie", "tie", "dots", (120, 0, 160), (250, 250, 250)),
    FineClass("n04591157", "Windsor tie", "tie", "dstripes", (170, 0, 40), (240, 200, 0)),
    FineClass("n02802426", "basketball", "sports ball", "grid", (240, 110, 20), (20, 20, 20)),
    FineClass("n03445777", "golf ball", "sports ball", "dots", (250, 250, 250), (180, 180, 190)),
    FineClass("n04409515", "tennis ball", "sports ball", "solid", (200, 240, 40), (200, 240, 40)),
    FineClass("n04540053", "volleyball", "sports ball", "rings", (250, 250, 250), (30, 80, 200)),
    FineClass("n04591713", "wine bottle", "bottle", "solid", (90, 10, 40), (90, 10, 40)),
    FineClass("n04557648", "water bottle", "bottle", "hstripes", (120, 200, 250), (250, 250, 250)),
    FineClass("n02823428", "beer bottle", "bottle", "checker", (130, 70, 10), (250, 220, 120)),
    FineClass("n04099969", "rocking chair", "chair", "vstripes", (150, 80, 20), (60, 30, 10)),
    FineClass("n03376595", "folding chair", "chair", "checker", (0, 150, 160), (250, 250, 250)),
    FineClass("n04429376", "throne", "chair", "rings", (230, 180, 0), (160, 0, 20)),
    # Unrelated: an insect, a fruit and a tool, with their own shapes.
    FineClass("n02165456", "ladybug", None, "dots", (220, 20, 20), (10, 10, 10), shape="dome"),
    FineClass("n07749582", "lemon", None, "solid", (250, 235, 40), (250, 235, 40), shape="lens"),
    FineClass("n03481172", "hammer", None, "hstripes", (110, 70, 30), (170, 175, 185), shape="tee"),
)


@dataclass(frozen=True)
class World:
    """One generated world: its classes and how its images look. Worlds share only the on-disk
    formats and the mechanism (coarse boxes, fine classification images, DET-style val)."""

    name: str
    description: str
    coarse: tuple[CoarseClass, ...]
    fine: tuple[FineClass, ...]
    # Added to the image-set codes of the per-image seeds, so worlds draw unrelated streams.
    seed_code: int
    # Object side as a fraction of the image's shorter side, in detection images.
    object_size: tuple[float, float]
    # The labelled object of a classification image, the same way.
    cls_object_size: tuple[float, float]
    # Width / height of an object, drawn log-uniformly; and its rotation in degrees (+-).
    object_aspect: tuple[float, float]
    max_angle: float
    # Image shapes (width : height) and how the background and clutter are drawn.
    canvas_aspects: tuple[tuple[int, int], ...]
    background: str  # 'gradient' (smooth ramp + blotches) or 'bands' (wavy horizontal bands)
    clutter: tuple[int, int]  # clutter items per image
    clutter_style: str  # 'strokes' (lines, arcs, blobs) or 'boxes' (outlined boxes, dots)
    coco_max_objects: int  # objects per COCO-style image, at most
    det_max_objects: int  # objects per DET-style image, at most


# Image counts per set and image sizes (pixels, longest side) of each scale (sample_data.scale); `tiny` is for tests.
SCALES: dict[str, dict[str, Any]] = {
    "tiny": dict(coco_train=6, coco_val=3, cls_per_class=1, det_val=6, side=(160, 200)),
    "small": dict(coco_train=240, coco_val=80, cls_per_class=32, det_val=480, side=(256, 320)),
    "medium": dict(coco_train=1200, coco_val=400, cls_per_class=160, det_val=600, side=(320, 480)),
}

GENERATOR_VERSION = 4
# Object side as a fraction of the image's shorter side, and background clutter items per image.
# Version 1 drew objects from 6% and 6-15 clutter items: a from-scratch detector on 2 CPUs (the
# demo's 10 minutes) barely found them at 160-224 px inputs (mAP@.5 ~0.04); 12% keeps the
# smallest ones at about 4 px of a 7x7 grid cell at 192 px.
# Version 2 drew every COCO-style object dull: a detector then never saw a textured object as an
# object, and the unseen fine classes (all textured) were missed by every model. Version 3 draws
# coarse objects in the looks of their fine classes too (still labelled coarse), as COCO does.
# Version 4 has 480 DET-style val images at the small scale (120 before): about 55 boxes per
# unseen class instead of 14, so one AP@.5 moves by less than the difference it is meant to show.
OBJECT_SIZE = (0.12, 0.6)
CLUTTER = (3, 10)
MARKER = "sample_data.json"
OUR_DIRS = ("coco", "imagenet", "imagenet_det")
JPEG_OPTIONS = dict(format="JPEG", quality=90, subsampling=2, optimize=False, progressive=False)
# Distinct integers per image set: the per-image seed must not depend on Python's string hash.
_SET_CODES = {"coco_train": 1, "coco_val": 2, "imagenet_train": 3, "det_val": 4}
_ASPECTS = ((4, 3), (3, 4), (1, 1), (3, 2), (16, 9))
COCO_VAL_ID_BASE = 1_000_000  # COCO ids are unique across splits

ZOO = World(
    name="zoo", description="cars, buses, birds, dogs, elephants, bears (their breeds, species and models)",
    coarse=COARSE, fine=FINE, seed_code=0, object_size=OBJECT_SIZE, cls_object_size=(0.35, 0.8),
    object_aspect=(0.5, 2.0), max_angle=20.0, canvas_aspects=_ASPECTS, background="gradient", clutter=CLUTTER,
    clutter_style="strokes", coco_max_objects=6, det_max_objects=5)
# Smaller, more elongated, more rotated objects, more of them per image, busier banded scenes.
DEPOT = World(
    name="depot", description="trucks, boats, ties, sports balls, bottles, chairs (their kinds); "
    "ladybug, lemon, hammer unrelated",
    coarse=DEPOT_COARSE, fine=DEPOT_FINE, seed_code=10, object_size=(0.1, 0.45), cls_object_size=(0.3, 0.65),
    object_aspect=(0.4, 2.5), max_angle=35.0, canvas_aspects=((2, 1), (1, 2), (4, 3), (1, 1)),
    background="bands", clutter=(6, 16), clutter_style="boxes", coco_max_objects=8, det_max_objects=7)
WORLDS: dict[str, World] = {w.name: w for w in (ZOO, DEPOT)}


class SampleDataError(PipelineError):
    """Bad arguments, or an output directory that holds data this generator did not write."""


def world(name: str) -> World:
    """The world called ``name``; a clear error naming the known ones otherwise."""
    if name not in WORLDS:
        raise SampleDataError(f"sample data: unknown world {name!r}; choose one of {', '.join(WORLDS)}")
    return WORLDS[name]


def _coarse_by_name(w: World = ZOO) -> dict[str, CoarseClass]:
    return {c.name: c for c in w.coarse}


def shape_of(fine: FineClass, w: World = ZOO) -> str:
    return fine.shape if fine.coarse is None else _coarse_by_name(w)[fine.coarse].shape


def det_classes(w: World = ZOO) -> list[tuple[str, int, str, str]]:
    """The DET-style class list: (wnid, det_id, name, 'seen'|'unseen'), sorted by name like DET-200."""
    rows = [(c.wnid, c.name, "seen") for c in w.coarse] + [(f.wnid, f.name, "unseen") for f in w.fine]
    rows.sort(key=lambda r: (r[1].lower(), r[0]))
    return [(wnid, i + 1, name, status) for i, (wnid, name, status) in enumerate(rows)]


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _unit_polygon(shape: str) -> list[list[tuple[float, float]]]:
    """Outline(s) of a shape inside the unit box centred on 0; a second ring is a hole."""
    if shape in ("ellipse", "ring"):
        pts = [(0.5 * math.cos(t), 0.5 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
        if shape == "ring":
            return [pts, [(0.56 * x, 0.56 * y) for x, y in pts]]
        return [pts]
    if shape == "rectangle":
        return [[(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]]
    if shape == "triangle":
        return [[(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)]]
    if shape == "diamond":
        return [[(0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0)]]
    if shape == "hexagon":
        return [[(0.5 * math.cos(t), 0.5 * math.sin(t)) for t in np.arange(6) * math.pi / 3]]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 0.5 if k % 2 == 0 else 0.21
            t = -math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(t), r * math.sin(t) + 0.05))
        return [pts]
    if shape == "cross":
        a = 1 / 6
        return [[(-a, -0.5), (a, -0.5), (a, -a), (0.5, -a), (0.5, a), (a, a), (a, 0.5), (-a, 0.5),
                 (-a, a), (-0.5, a), (-0.5, -a), (-a, -a)]]
    if shape == "arrow":
        return [[(-0.5, -0.18), (0.1, -0.18), (0.1, -0.5), (0.5, 0.0), (0.1, 0.5), (0.1, 0.18), (-0.5, 0.18)]]
    if shape == "ball":  # a 12-gon
        return [[(0.5 * math.cos(t), 0.5 * math.sin(t)) for t in np.arange(12) * math.pi / 6 + math.pi / 12]]
    if shape == "truck":  # a box with a lower cab in front
        return [[(-0.5, -0.5), (0.15, -0.5), (0.15, -0.1), (0.42, -0.1), (0.5, 0.1), (0.5, 0.5), (-0.5, 0.5)]]
    if shape == "hull":  # a boat: wide deck, narrow keel, a cabin
        return [[(-0.5, 0.0), (-0.15, 0.0), (-0.15, -0.5), (0.2, -0.5), (0.2, 0.0), (0.5, 0.0), (0.28, 0.5),
                 (-0.32, 0.5)]]
    if shape == "kite":  # a tie: short knot, long blade
        return [[(0.0, -0.5), (0.22, -0.3), (0.0, 0.5), (-0.22, -0.3)]]
    if shape == "bottle":
        return [[(-0.1, -0.5), (0.1, -0.5), (0.1, -0.2), (0.3, -0.05), (0.3, 0.5), (-0.3, 0.5), (-0.3, -0.05),
                 (-0.1, -0.2)]]
    if shape == "chair":  # side view: back, seat, legs
        return [[(-0.4, -0.5), (-0.2, -0.5), (-0.2, 0.0), (0.4, 0.0), (0.4, 0.5), (0.25, 0.5), (0.25, 0.18),
                 (-0.25, 0.18), (-0.25, 0.5), (-0.4, 0.5)]]
    if shape == "dome":  # half a disc
        return [[(0.5 * math.cos(t), 0.5 - math.sin(t)) for t in np.linspace(0, math.pi, 24)]]
    if shape == "lens":  # two arcs meeting in points
        top = [(0.5 * math.cos(t), -0.5 * math.sin(t)) for t in np.linspace(0, math.pi, 16)]
        return [top + [(x, -y) for x, y in reversed(top[1:-1])]]
    if shape == "tee":  # a hammer: head across a handle
        return [[(-0.5, -0.5), (0.5, -0.5), (0.5, -0.22), (0.1, -0.22), (0.1, 0.5), (-0.1, 0.5), (-0.1, -0.22),
                 (-0.5, -0.22)]]
    raise ValueError(f"unknown shape {shape!r}")


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _dull(rng: np.random.Generator) -> tuple[int, int, int]:
    """A low-saturation, mid-value colour: the coarse look, far from every fine class's colours."""
    return _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.7))


def _texture(pattern: str, c1: tuple[int, int, int], c2: tuple[int, int, int], w: int, h: int,
             size: float, rng: np.random.Generator) -> np.ndarray:
    """A (h, w, 3) uint8 fill; the pattern's period follows the object size so it stays visible."""
    period = max(6, int(size / 5))
    yy, xx = np.mgrid[0:h, 0:w]
    xx = xx + int(rng.integers(period))
    yy = yy + int(rng.integers(period))
    half = period // 2
    if pattern == "solid":
        sel = np.zeros((h, w), bool)
    elif pattern == "hstripes":
        sel = (yy // half) % 2 == 1
    elif pattern == "vstripes":
        sel = (xx // half) % 2 == 1
    elif pattern == "dstripes":
        sel = ((xx + yy) // half) % 2 == 1
    elif pattern == "checker":
        sel = ((xx // half) + (yy // half)) % 2 == 1
    elif pattern == "dots":
        dx, dy = xx % period - period / 2, yy % period - period / 2
        sel = dx * dx + dy * dy < (0.32 * period) ** 2
    elif pattern == "grid":  # thin lines both ways
        sel = (xx % period < max(2, period // 4)) | (yy % period < max(2, period // 4))
    elif pattern == "rings":  # concentric rings around the fill's centre
        r = np.hypot(xx - xx.mean(), yy - yy.mean())
        sel = (r // half) % 2 == 1
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    # A little brightness jitter per instance, so no two objects are pixel-identical.
    gain = rng.uniform(0.9, 1.08)
    a = np.clip(np.array(c1, float) * gain, 0, 255)
    b = np.clip(np.array(c2, float) * gain, 0, 255)
    return np.where(sel[..., None], b, a).astype(np.uint8)


@dataclass
class _Placed:
    label: str  # COCO category name, or wnid
    outlines: list[list[tuple[float, float]]]  # image coordinates
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (exact polygon bounds)


def _transform(shape: str, w: float, h: float, angle: float) -> list[list[tuple[float, float]]]:
    c, s = math.cos(angle), math.sin(angle)
    return [[(x * w * c - y * h * s, x * w * s + y * h * c) for x, y in ring] for ring in _unit_polygon(shape)]


def _place(rng: np.random.Generator, shape: str, img_w: int, img_h: int, size_range: tuple[float, float],
           taken: list[tuple[float, float, float, float]], w: World = ZOO,
           tries: int = 25) -> list[list[tuple[float, float]]] | None:
    """Outlines of one object that fits the image and barely overlaps the ones already placed."""
    base = min(img_w, img_h)
    for _ in range(tries):
        size = base * math.exp(rng.uniform(math.log(size_range[0]), math.log(size_range[1])))
        aspect = math.exp(rng.uniform(math.log(w.object_aspect[0]), math.log(w.object_aspect[1])))
        angle = math.radians(rng.uniform(-w.max_angle, w.max_angle))
        rings = _transform(shape, size * math.sqrt(aspect), size / math.sqrt(aspect), angle)
        xs = [p[0] for p in rings[0]]
        ys = [p[1] for p in rings[0]]
        ew, eh = max(xs) - min(xs), max(ys) - min(ys)
        shrink = min(1.0, 0.95 * img_w / ew, 0.95 * img_h / eh)
        if shrink < 1.0:
            rings = [[(x * shrink, y * shrink) for x, y in r] for r in rings]
            xs, ys, ew, eh = [x * shrink for x in xs], [y * shrink for y in ys], ew * shrink, eh * shrink
        ox = rng.uniform(-min(xs), img_w - max(xs))
        oy = rng.uniform(-min(ys), img_h - max(ys))
        box = (min(xs) + ox, min(ys) + oy, max(xs) + ox, max(ys) + oy)
        if all(_overlap(box, t) <= 0.3 for t in taken):
            return [[(x + ox, y + oy) for x, y in r] for r in rings]
    return None


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box: keeps every object mostly visible."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _paint(img: Image.Image, outlines: list[list[tuple[float, float]]], texture_args: tuple | None,
           rng: np.random.Generator) -> None:
    """Fill a shape with a texture (fine look) or a dull colour (coarse look), then outline it."""
    xs = [p[0] for p in outlines[0]]
    ys = [p[1] for p in outlines[0]]
    x0, y0 = max(0, int(math.floor(min(xs)))), max(0, int(math.floor(min(ys))))
    x1, y1 = min(img.width, int(math.ceil(max(xs))) + 1), min(img.height, int(math.ceil(max(ys))) + 1)
    w, h = x1 - x0, y1 - y0
    size = math.sqrt(max(1.0, (max(xs) - min(xs)) * (max(ys) - min(ys))))
    if texture_args is None:
        fill = _dull(rng)
        tex = _texture("solid", fill, fill, w, h, size, rng)
    else:
        pattern, c1, c2 = texture_args
        tex = _texture(pattern, c1, c2, w, h, size, rng)
    mask = Image.new("L", (w, h), 0)
    md = ImageDraw.Draw(mask)
    for k, ring in enumerate(outlines):
        md.polygon([(x - x0, y - y0) for x, y in ring], fill=0 if k else 255)
    img.paste(Image.fromarray(tex), (x0, y0), mask)
    edge = tuple(int(v * 0.45) for v in tex.reshape(-1, 3).mean(0))
    width = max(1, int(round(size / 40)))
    draw = ImageDraw.Draw(img)
    for ring in outlines:
        draw.line([*ring, ring[0]], fill=edge, width=width, joint="curve")


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth two-colour gradient with low-frequency blotches."""
    c0 = np.array(_hsv(rng.random(), rng.uniform(0, 0.45), rng.uniform(0.3, 0.9)), float)
    c1 = np.array(_hsv(rng.random(), rng.uniform(0, 0.45), rng.uniform(0.3, 0.9)), float)
    t = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (xx * math.cos(t) + yy * math.sin(t)) / max(w, h)
    ramp = (ramp - ramp.min()) / max(1e-6, ramp.max() - ramp.min())
    arr = c0 + ramp[..., None] * (c1 - c0)
    coarse = rng.normal(0, 22, (h // 40 + 2, w // 40 + 2, 3))
    blotch = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    arr = arr + np.asarray(blotch, float) - 128
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _bands(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Two to four muted horizontal bands with wavy borders, and fine noise: a horizon-like scene."""
    n = int(rng.integers(2, 5))
    colors = np.array([_hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.85)) for _ in range(n)], float)
    yy, xx = np.mgrid[0:h, 0:w]
    wave = (h / 14) * np.sin(xx / max(1.0, w) * rng.uniform(2, 9) + rng.uniform(0, 2 * math.pi))
    band = np.clip(((yy + wave) / h * n).astype(int), 0, n - 1)
    arr = colors[band] + rng.normal(0, 9, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _boxes_clutter(img: Image.Image, rng: np.random.Generator, n: int) -> None:
    """Outlined boxes, small dull squares and dot rows: man-made structure that is no class's shape."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    side = min(w, h)
    for _ in range(n):
        color = _hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.15, 0.9))
        kind = rng.integers(3)
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        if kind == 0:
            bw, bh = rng.uniform(0.05, 0.5, 2) * side
            draw.rectangle([x, y, x + bw, y + bh], outline=color, width=int(rng.integers(1, 3)))
        elif kind == 1:
            r = rng.uniform(0.015, 0.04) * side
            draw.rectangle([x - r, y - r, x + r, y + r], fill=_dull(rng))
        else:
            step = rng.uniform(0.02, 0.05) * side
            for k in range(int(rng.integers(3, 9))):
                draw.ellipse([x + k * step - 1.5, y - 1.5, x + k * step + 1.5, y + 1.5], fill=color)


def _clutter(img: Image.Image, rng: np.random.Generator, n: int, w: World = ZOO) -> None:
    """Lines, arcs and small lumpy blobs: structure that is not any class's shape."""
    if w.clutter_style == "boxes":
        _boxes_clutter(img, rng, n)
        return
    draw = ImageDraw.Draw(img)
    w, h = img.size
    side = min(w, h)
    for _ in range(n):
        color = _hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.1, 0.95))
        kind = rng.integers(3)
        if kind == 0:
            pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(int(rng.integers(2, 5)))]
            draw.line(pts, fill=color, width=int(rng.integers(1, 4)))
        elif kind == 1:
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.4) * side
            start = float(rng.uniform(0, 360))
            draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + float(rng.uniform(40, 200)),
                     fill=color, width=int(rng.integers(1, 4)))
        else:
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.05) * side
            k = int(rng.integers(7, 12))
            radii = r * rng.uniform(0.45, 1.35, k)
            pts = [(cx + radii[i] * math.cos(2 * math.pi * i / k), cy + radii[i] * math.sin(2 * math.pi * i / k))
                   for i in range(k)]
            draw.polygon(pts, fill=_dull(rng))


def _canvas(rng: np.random.Generator, side_range: tuple[int, int], world: World = ZOO) -> Image.Image:
    longest = int(rng.integers(side_range[0], side_range[1] + 1))
    a, b = world.canvas_aspects[int(rng.integers(len(world.canvas_aspects)))]
    w, h = (longest, round(longest * b / a)) if a >= b else (round(longest * a / b), longest)
    img = _bands(rng, w, h) if world.background == "bands" else _background(rng, w, h)
    _clutter(img, rng, int(rng.integers(*world.clutter)), world)
    return img


def _finish(img: Image.Image, rng: np.random.Generator, world: World = ZOO) -> bytes:
    """A few occluding lines, sensor-like noise, and a JPEG with fixed encoder settings."""
    _clutter(img, rng, int(rng.integers(0, 3)), world)
    arr = np.asarray(img, float) + rng.normal(0, rng.uniform(2, 7), (img.height, img.width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, **JPEG_OPTIONS)
    return buf.getvalue()


def _rng(world: World, seed: int, image_set: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, world.seed_code + _SET_CODES[image_set], *index]))


# What an object of one label may look like: (label, shape, appearances), each appearance a fine
# look (pattern, colour, colour) or None for the dull coarse look; one is drawn per instance.
_Look = tuple[str, str, tuple]


def _scene(rng: np.random.Generator, side: tuple[int, int], looks: list[_Look], first: _Look,
           max_objects: int, world: World = ZOO) -> tuple[bytes, int, int, list[_Placed]]:
    """A detection image: `first` always, plus up to max_objects-1 random looks."""
    img = _canvas(rng, side, world)
    wanted = [first] + [looks[int(rng.integers(len(looks)))] for _ in range(int(rng.integers(0, max_objects)))]
    placed: list[_Placed] = []
    for label, shape, appearances in wanted:
        outlines = _place(rng, shape, img.width, img.height, world.object_size, [p.box for p in placed], world)
        if outlines is None:  # no room left without hiding another object
            continue
        _paint(img, outlines, appearances[int(rng.integers(len(appearances)))], rng)
        xs = [x for x, _ in outlines[0]]
        ys = [y for _, y in outlines[0]]
        placed.append(_Placed(label, outlines, (min(xs), min(ys), max(xs), max(ys))))
    return _finish(img, rng, world), img.width, img.height, placed


def _fine_look(f: FineClass) -> tuple[str, tuple[int, int, int], tuple[int, int, int]]:
    return (f.pattern, f.color, f.color2)


# ---------------------------------------------------------------------------------------------
# Writers for each format
# ---------------------------------------------------------------------------------------------


def _polygon_area(ring: list[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]))) / 2


def _coco_split(out: str, split: str, count: int, seed: int, side: tuple[int, int],
                options: Mapping[str, Any] | None, world: World = ZOO) -> tuple[int, int]:
    # A coarse object is dull or looks like one of its fine classes, with equal odds.
    looks: list[_Look] = [(c.name, c.shape, (None, *(_fine_look(f) for f in world.fine if f.coarse == c.name)))
                          for c in world.coarse]
    categories = [{"id": c.coco_id, "name": c.name, "supercategory": c.supercategory}
                  for c in sorted(world.coarse, key=lambda c: c.coco_id)]
    cat_id = {c.name: c.coco_id for c in world.coarse}
    images, annotations = [], []
    id_base = 0 if split == "train" else COCO_VAL_ID_BASE
    for i in range(count):
        rng = _rng(world, seed, f"coco_{split}", i)
        data, w, h, placed = _scene(rng, side, looks, looks[i % len(looks)], world.coco_max_objects, world)
        image_id = id_base + i + 1
        file_name = f"{image_id:012d}.jpg"
        storage.write_bytes(storage.join(out, SAMPLE_DATA[f"coco_{split}"], file_name), data, options)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 1})
        for p in placed:
            x0, y0, x1, y1 = p.box
            annotations.append({
                "id": len(annotations) + 1 + id_base,
                "image_id": image_id,
                "category_id": cat_id[p.label],
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(_polygon_area(p.outlines[0]), 2),
                "segmentation": [[round(v, 2) for xy in p.outlines[0] for v in xy]],
                "iscrowd": 0,
            })
    doc = {
        "info": {"description": "y9k synthetic COCO-style sample (pipelines.sample_data)", "version": str(GENERATOR_VERSION),
                 "year": 2017, "contributor": "y9k", "seed": seed},
        "licenses": [{"id": 1, "name": "synthetic, public domain", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    storage.write_bytes(storage.join(out, "coco", "annotations", f"instances_{split}.json"),
                        json.dumps(doc, separators=(",", ":")).encode(), options)
    return len(images), len(annotations)


def _imagenet(out: str, per_class: int, seed: int, side: tuple[int, int],
              options: Mapping[str, Any] | None, world: World = ZOO) -> int:
    written = 0
    for ci, f in enumerate(world.fine):
        for i in range(per_class):
            rng = _rng(world, seed, "imagenet_train", ci, i)
            img = _canvas(rng, side, world)
            # One dominant object carries the image-level label.
            outlines = _place(rng, shape_of(f, world), img.width, img.height, world.cls_object_size, [], world)
            assert outlines is not None  # nothing else is placed, so the first try fits
            _paint(img, outlines, _fine_look(f), rng)
            uri = storage.join(out, SAMPLE_DATA["imagenet_train"], f.wnid, f"{f.wnid}_{i + 1}.JPEG")
            storage.write_bytes(uri, _finish(img, rng, world), options)
            written += 1
    mapping = "".join(f"{f.wnid} {f.name}\n" for f in sorted(world.fine, key=lambda f: f.wnid))
    storage.write_text(storage.join(out, "imagenet", "LOC_synset_mapping.txt"), mapping, options)
    return written


def _voc_xml(name: str, w: int, h: int, placed: list[_Placed]) -> bytes:
    """PASCAL VOC XML laid out like the ILSVRC DET annotation files (tabs, integer pixel boxes)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "Y9K_DET_val"
    ET.SubElement(root, "filename").text = name
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "y9k_sample"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(w)
    ET.SubElement(size, "height").text = str(h)
    for p in placed:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = p.label
        bb = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = p.box
        for tag, v in (("xmin", max(0, math.floor(x0))), ("xmax", min(w - 1, math.ceil(x1))),
                       ("ymin", max(0, math.floor(y0))), ("ymax", min(h - 1, math.ceil(y1)))):
            ET.SubElement(bb, tag).text = str(v)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode").encode() + b"\n"


def _det_val(out: str, count: int, seed: int, side: tuple[int, int],
             options: Mapping[str, Any] | None, world: World = ZOO) -> int:
    coarse = _coarse_by_name(world)
    fine = {f.wnid: f for f in world.fine}
    classes = det_classes(world)
    looks: list[_Look] = []
    for wnid, _, name, status in classes:
        if status == "seen":
            looks.append((wnid, coarse[name].shape, (None,)))
        else:
            looks.append((wnid, shape_of(fine[wnid], world), (_fine_look(fine[wnid]),)))
    boxes = 0
    for i in range(count):
        rng = _rng(world, seed, "det_val", i)
        data, w, h, placed = _scene(rng, side, looks, looks[i % len(looks)], world.det_max_objects, world)
        name = f"Y9K_DET_val_{i + 1:08d}"
        storage.write_bytes(storage.join(out, SAMPLE_DATA["det_val"], "Data", "DET", "val", f"{name}.JPEG"), data, options)
        storage.write_bytes(storage.join(out, SAMPLE_DATA["det_val"], "Annotations", "DET", "val", f"{name}.xml"),
                            _voc_xml(name, w, h, placed), options)
        boxes += len(placed)
    storage.write_text(storage.join(out, SAMPLE_DATA["det_val"], DET_CLASSES_FILE),
                       "".join(f"{wnid}\t{det_id}\t{name}\n" for wnid, det_id, name, _ in classes), options)
    storage.write_text(storage.join(out, SAMPLE_DATA["det_val"], "seen_unseen.tsv"),
                       "".join(f"{wnid}\t{status}\n" for wnid, _, _, status in classes), options)
    return boxes


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSummary:
    out_uri: str  # credentials redacted
    seed: int
    scale: str
    world: str
    coco_train_images: int
    coco_train_boxes: int
    coco_val_images: int
    coco_val_boxes: int
    coco_categories: int
    imagenet_images: int
    imagenet_classes: int
    det_val_images: int
    det_val_boxes: int
    det_classes: int
    det_seen: int
    det_unseen: int
    seconds: float
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        how = "reused (already complete)" if self.reused else f"generated in {self.seconds:.1f} s"
        return "\n".join([
            f"sample data at {self.out_uri} (world {self.world}, seed {self.seed}, scale {self.scale}): {how}",
            f"  coco/          {self.coco_train_images} train images ({self.coco_train_boxes} boxes), "
            f"{self.coco_val_images} val images ({self.coco_val_boxes} boxes), {self.coco_categories} categories",
            f"  imagenet/      {self.imagenet_images} train images in {self.imagenet_classes} classes",
            f"  imagenet_det/  {self.det_val_images} val images ({self.det_val_boxes} boxes), "
            f"{self.det_classes} classes: {self.det_seen} seen, {self.det_unseen} unseen",
        ])


def generate(out_uri: str, seed: int = 0, scale: str = "small",
             storage_options: Mapping[str, Any] | None = None, *, world_name: str = "zoo",
             force: bool = False) -> SampleSummary:
    """Write the three sample datasets of one world under out_uri; reuse a complete one with the
    same world, seed and scale.

    force: regenerate even when a complete output with the same world, seed and scale exists.
    """
    w = world(world_name)
    if scale not in SCALES:
        raise SampleDataError(f"sample data: unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SampleDataError(f"sample data: seed must be a non-negative integer, got {seed!r}")
    out = storage.normalize(out_uri)
    shown = storage.redact_uri(out)
    marker_uri = storage.join(out, MARKER)
    marker = _read_marker(marker_uri, storage_options)
    # Markers from before worlds existed describe the zoo world.
    if marker is not None and not force and marker.get("complete") and marker.get("seed") == seed \
            and marker.get("scale") == scale and marker.get("version") == GENERATOR_VERSION \
            and marker.get("world", ZOO.name) == w.name:
        return SampleSummary(**{"world": ZOO.name, **marker["summary"], "reused": True})
    if marker is None:
        ours = [d for d in OUR_DIRS if storage.exists(storage.join(out, d), storage_options)]
        if ours:
            raise SampleDataError(f"sample data: {shown} already holds {', '.join(ours)}/ without a {MARKER} "
                                  "marker, so it was not written by this generator; choose an empty --out")
    for d in OUR_DIRS:  # an older output of ours: replace it completely, no stale files
        storage.remove(storage.join(out, d), storage_options)

    started = time.perf_counter()
    head = {"version": GENERATOR_VERSION, "world": w.name, "seed": seed, "scale": scale}
    storage.write_json(marker_uri, {**head, "complete": False}, storage_options)
    cfg = SCALES[scale]
    side = cfg["side"]
    train_imgs, train_boxes = _coco_split(out, "train", cfg["coco_train"], seed, side, storage_options, w)
    val_imgs, val_boxes = _coco_split(out, "val", cfg["coco_val"], seed, side, storage_options, w)
    cls_imgs = _imagenet(out, cfg["cls_per_class"], seed, side, storage_options, w)
    det_boxes = _det_val(out, cfg["det_val"], seed, side, storage_options, w)
    classes = det_classes(w)
    summary = SampleSummary(
        out_uri=shown, seed=seed, scale=scale, world=w.name,
        coco_train_images=train_imgs, coco_train_boxes=train_boxes,
        coco_val_images=val_imgs, coco_val_boxes=val_boxes, coco_categories=len(w.coarse),
        imagenet_images=cls_imgs, imagenet_classes=len(w.fine),
        det_val_images=cfg["det_val"], det_val_boxes=det_boxes, det_classes=len(classes),
        det_seen=sum(c[3] == "seen" for c in classes), det_unseen=sum(c[3] == "unseen" for c in classes),
        seconds=round(time.perf_counter() - started, 2),
    )
    # The marker is written last: only a finished output says complete.
    storage.write_json(marker_uri, {**head, "complete": True, "summary": summary.to_dict()}, storage_options)
    return summary


def _read_marker(uri: str, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not storage.exists(uri, options):
        return None
    try:
        marker = storage.read_json(uri, options)
    except ValueError as e:
        raise SampleDataError(f"sample data: {e}; delete it or choose another --out") from None
    if not isinstance(marker, dict):
        raise SampleDataError(f"sample data: {storage.redact_uri(uri)} is not a {MARKER} marker (not a JSON object)")
    return marker


# ---------------------------------------------------------------------------------------------
# A contact sheet, to look at the data (it reads the files back, so it checks them too)
# ---------------------------------------------------------------------------------------------


def _coco_items(root: str, n: int, options: Mapping[str, Any] | None) -> Iterator[tuple[bytes, list, str]]:
    doc = json.loads(storage.read_text(storage.join(root, "coco", "annotations", "instances_train.json"), options))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    for im in doc["images"][:n]:
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        boxes = [((x, y, x + w, y + h), names[a["category_id"]]) for a in anns for x, y, w, h in [a["bbox"]]]
        data = storage.read_bytes(storage.join(root, SAMPLE_DATA["coco_train"], im["file_name"]), options)
        yield data, boxes, f"coco {im['file_name']}"


def _imagenet_items(root: str, n: int, options: Mapping[str, Any] | None,
                    w: World) -> Iterator[tuple[bytes, list, str]]:
    step = max(1, len(w.fine) // n)
    for f in w.fine[::step][:n]:
        uri = storage.join(root, SAMPLE_DATA["imagenet_train"], f.wnid, f"{f.wnid}_1.JPEG")
        yield storage.read_bytes(uri, options), [], f"{f.wnid} {f.name}"


def _det_items(root: str, n: int, options: Mapping[str, Any] | None, w: World) -> Iterator[tuple[bytes, list, str]]:
    names = {wnid: (name, status) for wnid, _, name, status in det_classes(w)}
    xmls = storage.list_files(storage.join(root, SAMPLE_DATA["det_val"], "Annotations", "DET", "val"), options, ".xml")
    for xml_uri in xmls[:n]:
        ann = ET.fromstring(storage.read_bytes(xml_uri, options))
        boxes = []
        for obj in ann.iter("object"):
            bb = obj.find("bndbox")
            xyxy = tuple(int(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            name, status = names[obj.findtext("name")]
            boxes.append((xyxy, f"{name} ({status})"))
        stem = ann.findtext("filename")
        data = storage.read_bytes(storage.join(root, SAMPLE_DATA["det_val"], "Data", "DET", "val", f"{stem}.JPEG"), options)
        yield data, boxes, f"det {stem}"


def contact_sheet(data_uri: str, out_png: str, per_row: int = 4,
                  storage_options: Mapping[str, Any] | None = None, tile: int = 240) -> str:
    """A PNG with a row each of COCO-style, classification and DET-style images, boxes labelled."""
    root = storage.normalize(data_uri)
    marker = _read_marker(storage.join(root, MARKER), storage_options) or {}
    w = world(marker.get("world", ZOO.name))
    rows = [list(_coco_items(root, per_row, storage_options)),
            list(_imagenet_items(root, per_row, storage_options, w)), list(_det_items(root, per_row, storage_options, w))]
    sheet = Image.new("RGB", (per_row * tile, len(rows) * (tile + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, items in enumerate(rows):
        for c, (data, boxes, caption) in enumerate(items):
            img = Image.open(io.BytesIO(data)).convert("RGB")
            scale = tile / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
            d = ImageDraw.Draw(img)
            for (x0, y0, x1, y1), label in boxes:
                d.rectangle([x0 * scale, y0 * scale, x1 * scale, y1 * scale], outline=(255, 0, 0), width=2)
                d.text((x0 * scale + 2, y0 * scale + 1), label, fill=(255, 255, 255), stroke_width=1,
                       stroke_fill=(0, 0, 0))
            ox, oy = c * tile, r * (tile + 14)
            sheet.paste(img, (ox, oy))
            draw.text((ox + 2, oy + tile), caption, fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    storage.write_bytes(out_png, buf.getvalue(), storage_options)
    return out_png
