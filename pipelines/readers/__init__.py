"""Dataset readers: a source on any fsspec store -> light image records and reject rows.

Readers run on the driver and never open an image: they parse annotations (the COCO JSON once
per run, XML files in batches), list image folders once, map labels to WordTree nodes and
decide everything that can be decided without pixels. Image bytes are read later by Ray
workers (:mod:`pipelines.stages.ingest`).

Accounting, per dataset and split: every *image record* (a COCO ``images`` entry, an XML
file, an ImageNet file) and every *object record* (a COCO annotation, an XML ``<object>``)
ends up either accepted (a shard row, a box in it) or in the rejects table with a reason.
An object of a rejected image is rejected with reason ``image rejected``.

Labels: a label is mapped to a WordTree node. A string that is not a wnid (``n`` and 8 digits)
is an ``unknown wnid``; so is a well-formed wnid that WordNet does not know (checked only when
such a wnid is not in the tree, so WordNet is loaded only then). A real synset, or a COCO/VOC
name, without a node in the tree is an ``unmapped label``. With ``data.unmapped: reject`` an
image holding an unmapped label is rejected whole (a detector must not learn that an
unlabelled object is background); with ``drop_label`` only the label (the box) is dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines import storage

if TYPE_CHECKING:
    from wordtree_build.tree import WordTree

# Reject reasons (the `reason` column of the rejects table).
CORRUPT = "corrupt image"
MISSING = "missing image"
SIZE_MISMATCH = "size mismatch"
UNKNOWN_IMAGE = "unknown image id"
NON_POSITIVE = "zero or negative area"
OUTSIDE = "box outside image"
DEGENERATE = "degenerate box"
MALFORMED_JSON = "malformed JSON"
MALFORMED_XML = "malformed XML"
UNKNOWN_WNID = "unknown wnid"
UNMAPPED = "unmapped label"
DUPLICATE = "duplicate id"
CROWD = "crowd annotation"
DIFFICULT = "difficult object"
IMAGE_REJECTED = "image rejected"
TOO_LARGE = "too many pixels"
NOT_REGULAR = "not a regular file"
MISSING_ANNOTATION = "missing annotation"

# Largest image side an annotation may state (the shard columns are int32; no camera is near it).
MAX_STATED_SIDE = 1 << 20

IMAGE, OBJECT = "image", "object"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Source:
    """One dataset split to ingest.

    dataset: ``coco`` | ``imagenet`` | ``imagenet_det`` | ``voc``.
    images: the image folder (COCO: the folder of JPEGs; ImageNet: the folder of ``<wnid>/``
    folders or ``<wnid>.tar`` files; DET / VOC: the folder of JPEGs).
    annotations: the COCO instances JSON, or the folder of XML files (DET / VOC); unused for
    ImageNet classification.
    image_list: VOC only, optional: ``ImageSets/Main/<split>.txt`` selecting the XML files.
    """

    dataset: str
    split: str
    images: str
    annotations: str | None = None
    image_list: str | None = None

    def __post_init__(self) -> None:
        if self.dataset not in ("coco", "imagenet", "imagenet_det", "voc"):
            raise ValueError(f"unknown dataset {self.dataset!r} (coco, imagenet, imagenet_det, voc)")
        if self.dataset != "imagenet" and not self.annotations:
            raise ValueError(f"{self.dataset} source {self.images!r}: annotations URI missing")

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.split}"

    def input_uris(self) -> list[str]:
        return [u for u in (self.annotations, self.images, self.image_list) if u]


@dataclass
class ReadResult:
    """What a reader found: records for the workers, rejects decided on the driver, counts."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    # Inputs that are expanded by the workers (ImageNet tar files), one dict each.
    containers: list[dict[str, Any]] = field(default_factory=list)
    images_in: int = 0
    objects_in: int = 0


def reject(source: str, record: str, field_: str, reason: str, detail: str = "", level: str = IMAGE) -> dict:
    """One row of the rejects table (the source URI is redacted here, once)."""
    return {"source": storage.redact_uri(source), "record": str(record), "field": field_, "reason": reason,
            "detail": detail, "level": level}


def image_record(*, image_id: str, dataset: str, split: str, kind: str, uri: str, stated_size=(-1, -1),
                 boxes=(), box_nodes=(), box_labels=(), box_records=(), image_node: int = -1,
                 image_label: str = "", payload: bytes | None = None, why: str = "",
                 why_detail: str = "") -> dict[str, Any]:
    """A light record for the workers: where the image is and its labels (boxes in pixels, xyxy).

    ``why`` set: the record is already known to be rejected (a tar member of an unusable class);
    the worker only writes its reject row, so it is counted like any other record.
    """
    return {
        "image_id": image_id, "dataset": dataset, "split": split, "kind": kind, "uri": uri,
        "stated_width": int(stated_size[0]), "stated_height": int(stated_size[1]),
        "boxes_px": [list(map(float, b)) for b in boxes], "box_nodes": list(box_nodes),
        "box_labels": list(box_labels), "box_records": list(box_records),
        "image_node": int(image_node), "image_label": image_label, "payload": payload,
        "why": why, "why_detail": why_detail,
    }


class LabelMapper:
    """Label -> (WordTree node, None) or (-1, reject reason), with the rules of the module doc."""

    def __init__(self, tree: WordTree, wordnet: Callable[[], Any] | None = None) -> None:
        self.tree = tree
        self._wordnet = wordnet  # a loader, called at most once and only when needed
        self._wn: Any = None
        self._cache: dict[str, tuple[int, str | None]] = {}

    def wnid(self, wnid: str) -> tuple[int, str | None]:
        if wnid not in self._cache:
            self._cache[wnid] = self._map(wnid)
        return self._cache[wnid]

    def _map(self, wnid: str) -> tuple[int, str | None]:
        if not isinstance(wnid, str) or not _WNID.match(wnid):
            return -1, UNKNOWN_WNID
        if wnid in self.tree:
            return self.tree.index(wnid), None
        if self._wordnet is not None:
            from wordtree_build.wordnet import wnid_to_synset

            if self._wn is None:
                self._wn = self._wordnet()
            try:
                wnid_to_synset(self._wn, wnid)
            except ValueError:
                return -1, UNKNOWN_WNID
        return -1, UNMAPPED


def list_by_stem(uri: str, storage_options: Mapping[str, Any] | None,
                 extensions: Iterable[str] = IMAGE_EXTENSIONS) -> dict[str, str]:
    """One listing of a folder (recursive): file stem -> full URI, for the image files in it."""
    exts = tuple(extensions)
    out: dict[str, str] = {}
    for path in storage.list_files(uri, storage_options):
        name = path.rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        if dot and ("." + ext.lower()) in exts:
            out.setdefault(stem, path)
    return out


def finite_number(value: Any) -> float | None:
    """A JSON / XML value as a finite float, or None (NaN, infinity, true/false, text, lists...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def stated_side(value: Any) -> int | None:
    """An image width / height from an annotation: a whole number in [0, MAX_STATED_SIDE] (0: not
    stated), or None when it is anything else (NaN, 1e12, -5, 12.5, "640")."""
    number = finite_number(value)
    if number is None or number != int(number) or not 0 <= number <= MAX_STATED_SIDE:
        return None
    return int(number)


def is_record_id(value: Any) -> bool:
    """A usable COCO id: an integer or a string (not a list, a dict, a float or a boolean)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def is_wnid(text: str) -> bool:
    return bool(_WNID.match(text))
