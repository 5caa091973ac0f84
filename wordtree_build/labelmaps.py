"""Dataset labels -> WordNet synsets -> WordTree nodes.

Class tables ship as package data (``wordtree_build/data``, see its README): the ILSVRC-1k
wnids, the 200 DET classes, darknet's 9k label list, and two tables written for this project:
COCO-80 and VOC-20 -> synset. ``coco80.tsv`` records darknet's choice (``coco9k.map``) beside
ours and says why each of the 11 differences was made.

Seen / unseen DET classes (the paper: 44 of the 200 DET classes share detection data with
COCO, 156 do not). A DET class is **seen** when the detector was trained with boxes of that
class: boxes labelled with its own node or with a node below it (a box labelled ``beagle`` is a
box of ``dog``). Every other DET class is **unseen**, including one *below* a detection node: a
box labelled ``dog`` says nothing about which boxes are terriers, so a terrier can only be
learned from classification images — the paper's mechanism (rule ``subtree``, the default).
:func:`det_relations` also reports the looser relation (``identical`` / ``related``: the two
lie on one root path); with darknet's own maps that gives 38 identical and 57 related, and
``rule="related"`` counts all 57 as seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from wordtree_build.errors import WordTreeError
from wordtree_build.tree import WordTree


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str
    wnid: str
    synset: str


def _data_rows(name: str, header: bool) -> list[list[str]]:
    text = resources.files("wordtree_build").joinpath("data", name).read_text(encoding="utf-8")
    rows = [ln.split("\t") for ln in text.splitlines() if ln.strip()]
    return rows[1:] if header else rows


@cache
def _coco_rows() -> tuple[CocoCategory, ...]:
    return tuple(CocoCategory(int(r[0]), r[1], r[2], r[3]) for r in _data_rows("coco80.tsv", header=True))


COCO_CATEGORIES: tuple[CocoCategory, ...] = _coco_rows()
VOC_WNIDS: dict[str, str] = {r[0]: r[1] for r in _data_rows("voc20.tsv", header=True)}


def coco_wnid(category: str | int) -> str:
    """The wnid of a COCO category given by its id (1..90) or name (``'traffic light'``)."""
    for c in COCO_CATEGORIES:
        if category == c.id or (isinstance(category, str) and category.strip().lower() == c.name):
            return c.wnid
    raise WordTreeError(f"COCO category {category!r} is not one of the 80 detection categories "
                        "(ids 1..90 with gaps, names as in instances_*.json)")


def coco_darknet_differences() -> list[dict[str, str]]:
    """Rows of ``coco80.tsv`` where our synset differs from darknet's ``coco9k.map``."""
    return [dict(zip(("id", "name", "wnid", "synset", "darknet_wnid", "darknet_synset", "note"), r))
            for r in _data_rows("coco80.tsv", header=True) if r[2] != r[4]]


def load_det200() -> list[tuple[str, int, str]]:
    """The 200 ILSVRC DET classes as (wnid, det_id, name), in det_id order."""
    return [(r[0], int(r[1]), r[2]) for r in _data_rows("det200.tsv", header=False)]


def imagenet1k_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 classification wnids, sorted (the usual class index order)."""
    return [r[0] for r in _data_rows("imagenet1k.tsv", header=False)]


def nine_k_wnids() -> list[str]:
    """The 9,418 wnids of darknet's YOLO9000 tree (``9k.labels``), in its order."""
    return [r[0] for r in _data_rows("9k.labels", header=False)]


def map_labels(tree: WordTree, wnids: Iterable[str]) -> list[int]:
    """The node index of each wnid; a wnid missing from the tree raises naming it."""
    return [tree.index(w) for w in wnids]


def _ancestors(tree: WordTree, node: int) -> set[int]:
    return set(tree.path(node))


def det_relations(tree: WordTree, det_wnids: Sequence[str], detection_wnids: Iterable[str]) -> dict[str, str]:
    """For each DET wnid: ``identical`` (its node has detection data), ``related`` (an ancestor or
    descendant has), or ``none``."""
    det_nodes = set(map_labels(tree, detection_wnids))
    # Nodes with detection data below them: every node on a detection node's path.
    above = set()
    for n in det_nodes:
        above |= _ancestors(tree, n)
    out = {}
    for w, node in zip(det_wnids, map_labels(tree, det_wnids)):
        if node in det_nodes:
            out[w] = "identical"
        elif node in above or _ancestors(tree, node) & det_nodes:
            out[w] = "related"
        else:
            out[w] = "none"
    return out


SEEN_RULES = ("subtree", "identical", "related")


def seen_unseen(tree: WordTree, det_wnids: Sequence[str], detection_wnids: Iterable[str],
                rule: str = "subtree") -> dict[str, str]:
    """``seen`` / ``unseen`` per DET wnid (rules in the module docstring): ``subtree`` (default):
    boxes exist for the class's node or a node below it; ``identical``: for its node;
    ``related``: for any node on the same root path."""
    if rule not in SEEN_RULES:
        raise WordTreeError(f"seen rule {rule!r}: expected one of {', '.join(SEEN_RULES)}")
    if rule == "related":
        rel = det_relations(tree, det_wnids, detection_wnids)
        return {w: ("unseen" if r == "none" else "seen") for w, r in rel.items()}
    det_nodes = set(map_labels(tree, detection_wnids))
    covered = set(det_nodes)
    if rule == "subtree":  # a node is covered when boxes exist at it or anywhere below it
        for n in det_nodes:
            covered |= _ancestors(tree, n)
    return {w: ("seen" if n in covered else "unseen") for w, n in zip(det_wnids, map_labels(tree, det_wnids))}

