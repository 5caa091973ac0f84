"""WordTree stage: the datasets' labels -> the tree, darknet files, label maps, the DET class table.

    result = run_wordtree(cfg.wordtree, cfg.data, sources, out_uri, cfg.storage.options)  # out_uri: <root>/wordtree

Labels (``wordtree.labels``): ``auto`` takes every label the configured datasets use: the COCO
categories in the instances JSON (through the project's COCO -> synset table), the ImageNet
class folders (or ``<wnid>.tar`` files), the DET / VOC class list. ``imagenet1k`` and ``9k``
are the bundled lists; anything else is a file with one wnid per line (first field). With a
fixed list, the DET classes are added so evaluation can always score them.

Writes into ``out_uri``: ``tree.parquet``, ``wordtree.tree`` / ``.names`` / ``.labels`` (darknet
format), ``coco.map`` (node of each COCO category, in category-id order, like darknet's
``coco9k.map``), ``det.map`` and ``det_classes.tsv`` (wnid, det_id, name, node, seen|unseen,
relation), ``report.json`` (the build report), and ``manifest.json`` last (tree hash inside).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines import manifest, storage
from pipelines.config import DataConfig, WordTreeConfig, sections_hash
from pipelines.errors import StageError
from pipelines.layout import DET_CLASSES_FILE, TREE_FILE
from pipelines.readers import Source, is_wnid

log = logging.getLogger(__name__)



@dataclass
class DetClass:
    wnid: str
    det_id: int
    name: str


@dataclass
class LabelSet:
    """The labels the datasets use, by role."""

    detection: list[str]  # wnids with box annotations for training (COCO, VOC)
    classification: list[str]  # wnids of classification images (ImageNet)
    det_classes: list[DetClass]  # the evaluation classes (DET-200 or a dataset's own list)

    def all_wnids(self) -> list[str]:
        seen: dict[str, None] = {}
        for w in [*self.detection, *self.classification, *(c.wnid for c in self.det_classes)]:
            seen.setdefault(w, None)
        return list(seen)


@dataclass
class WordTreeResult:
    out_uri: str
    tree_hash: str
    nodes: int
    labels: int
    seen: int
    unseen: int
    cached: bool = False

    def summary(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "labels": self.labels, "det_seen": self.seen, "det_unseen": self.unseen,
                "tree_hash": self.tree_hash}


def _coco_wnids(source: Source, opts: Mapping[str, Any] | None) -> list[str]:
    from wordtree_build.labelmaps import coco_wnid

    try:
        doc = storage.read_json(source.annotations, opts)
    except FileNotFoundError:
        raise StageError(f"{storage.redact_uri(source.annotations)}: COCO annotations not found") from None
    cats = doc.get("categories") if isinstance(doc, dict) else None
    if not isinstance(cats, list):
        raise StageError(f"{storage.redact_uri(source.annotations)}: no 'categories' list in the COCO JSON")
    out = []
    for i, c in enumerate(cats):
        name = c.get("name") if isinstance(c, dict) else None
        try:
            out.append(coco_wnid(name))
        except Exception:
            # Unknown categories are not fatal here: ingest rejects their boxes as unmapped.
            log.warning("%s: categories[%d] name %r has no synset in the COCO table; its boxes will be rejected",
                        storage.redact_uri(source.annotations), i, name)
    return out


def _imagenet_wnids(source: Source, opts: Mapping[str, Any] | None) -> list[str]:
    fs, path = storage.filesystem(source.images, opts)
    if not fs.exists(path):
        raise StageError(f"{storage.redact_uri(source.images)}: ImageNet folder not found")
    names = [p.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar") for p in fs.ls(path, detail=False)]
    return sorted(n for n in names if is_wnid(n))


def read_det_classes(uri: str, opts: Mapping[str, Any] | None = None) -> list[DetClass]:
    """A DET class table: ``wnid<TAB>det_id<TAB>name`` per line (like det200_synsets.tsv)."""
    out = []
    for lineno, line in enumerate(storage.read_text(uri, opts).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not is_wnid(parts[0]) or not parts[1].strip().isdigit():
            raise StageError(f"{storage.redact_uri(uri)} line {lineno}: expected 'wnid<TAB>det_id<TAB>name', "
                             f"got {line!r}")
        out.append(DetClass(parts[0], int(parts[1]), parts[2].strip()))
    return out


def det_classes_for(det_root: str | None, opts: Mapping[str, Any] | None, explicit: str | None = None) -> list[DetClass]:
    """The evaluation classes: an explicit table, a ``det_classes.tsv`` at the DET root, or DET-200."""
    if explicit:
        return read_det_classes(explicit, opts)
    if det_root:
        candidate = storage.join(storage.normalize(det_root), DET_CLASSES_FILE)
        if storage.exists(candidate, opts):
            return read_det_classes(candidate, opts)
    from wordtree_build.labelmaps import load_det200

    return [DetClass(w, int(i), n) for w, i, n in load_det200()]


def collect_labels(data_cfg: DataConfig, sources: Sequence[Source], opts: Mapping[str, Any] | None = None) -> LabelSet:
    """The labels the sources use, and the evaluation classes of ``data.det_val`` / ``data.det_classes``."""
    detection: list[str] = []
    classification: list[str] = []
    for s in sources:
        if s.dataset == "coco":
            detection += _coco_wnids(s, opts)
        elif s.dataset == "imagenet":
            classification += _imagenet_wnids(s, opts)
        elif s.dataset == "voc":
            from wordtree_build.labelmaps import VOC_WNIDS

            detection += list(VOC_WNIDS.values())
    det_root = data_cfg.det_val
    det = det_classes_for(det_root, opts, data_cfg.det_classes) if (det_root or data_cfg.det_classes) else []
    return LabelSet(sorted(set(detection)), sorted(set(classification)), det)


def _label_list(wordtree_cfg: WordTreeConfig, labels: LabelSet, opts: Mapping[str, Any] | None) -> tuple[list[str], str]:
    spec = wordtree_cfg.labels
    if spec == "auto":
        return sorted(labels.all_wnids()), "labels found in the datasets"
    from wordtree_build import labelmaps
    from wordtree_build.files import read_labels

    if spec == "imagenet1k":
        base, source = labelmaps.imagenet1k_wnids(), "imagenet1k"
    elif spec == "9k":
        base, source = labelmaps.nine_k_wnids(), "9k.labels"
    else:
        base, source = read_labels(spec, opts), spec
    extra = [c.wnid for c in labels.det_classes if c.wnid not in set(base)]
    return list(base) + extra, source


def _fingerprint(data_cfg: DataConfig, sources: Sequence[Source], opts: Mapping[str, Any] | None) -> str:
    # The labels depend only on annotation files and folder names, not on the images.
    uris = [s.annotations for s in sources if s.annotations and s.dataset == "coco"]
    names = []
    for s in sources:
        if s.dataset == "imagenet":
            names += _imagenet_wnids(s, opts)
    d = data_cfg
    det = [storage.join(storage.normalize(d.det_val), DET_CLASSES_FILE)] if d.det_val else []
    det += [d.det_classes] if d.det_classes else []
    det = [u for u in det if storage.exists(u, opts)]
    return manifest.stable_hash([manifest.fingerprint_uris(uris + det, opts), names,
                                 sorted(s.dataset for s in sources)])


def stage_key(wordtree_cfg: WordTreeConfig, data_cfg: DataConfig, sources: Sequence[Source],
              opts: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """(inputs fingerprint, config hash) of the stage: the same pair finds the tree already built."""
    return _fingerprint(data_cfg, sources, opts), sections_hash(wordtree=wordtree_cfg)


def run_wordtree(wordtree_cfg: WordTreeConfig, data_cfg: DataConfig, sources: Sequence[Source], out_uri: str,
                 opts: Mapping[str, Any] | None = None) -> WordTreeResult:
    """Build (or reuse) the WordTree for these sources and write it with its maps. ``data_cfg``
    names the evaluation classes (``det_val``, ``det_classes``); ``opts``: storage options."""
    from wordtree_build import labelmaps
    from wordtree_build.build import build_wordtree

    fp, ch = stage_key(wordtree_cfg, data_cfg, sources, opts)
    if manifest.is_complete(out_uri, fp, ch, opts):
        m = manifest.read_manifest(out_uri, opts)
        log.info("wordtree: reusing %s (tree %s)", storage.redact_uri(out_uri), m.extra.get("tree_hash"))
        return WordTreeResult(out_uri, m.extra["tree_hash"], m.counts["nodes"], m.counts["labels"],
                              m.counts["det_seen"], m.counts["det_unseen"], cached=True)

    labels = collect_labels(data_cfg, sources, opts)
    wnids, source = _label_list(wordtree_cfg, labels, opts)
    if not wnids:
        raise StageError("wordtree: no labels found (configure data sources or set wordtree.labels)")
    log.info("wordtree: building from %d labels (%s), root %s", len(wnids), source, wordtree_cfg.root)
    tree, report = build_wordtree(wnids, root=wordtree_cfg.root, orphans=wordtree_cfg.orphans,
                                  method=wordtree_cfg.method, source=source)

    tree.to_parquet(storage.join(out_uri, TREE_FILE), opts)
    tree.to_darknet(out_uri, "wordtree", opts)
    in_tree = [w for w in labels.detection if w in tree]
    coco_nodes = [tree.index(w) for w in labels.detection if w in tree]
    storage.write_text(storage.join(out_uri, "coco.map"), "".join(f"{n}\n" for n in coco_nodes), opts)

    det = [c for c in labels.det_classes if c.wnid in tree]
    missing = [c.wnid for c in labels.det_classes if c.wnid not in tree]
    if missing:
        log.warning("wordtree: %d DET classes have no node (skipped by evaluation): %s", len(missing),
                    ", ".join(missing[:10]))
    relation = labelmaps.det_relations(tree, [c.wnid for c in det], in_tree) if det else {}
    split = labelmaps.seen_unseen(tree, [c.wnid for c in det], in_tree, wordtree_cfg.seen_rule) if det else {}
    buf = io.StringIO()
    buf.write("wnid\tdet_id\tname\tnode\tsplit\trelation\n")
    for c in det:
        buf.write(f"{c.wnid}\t{c.det_id}\t{c.name}\t{tree.index(c.wnid)}\t{split[c.wnid]}\t{relation[c.wnid]}\n")
    storage.write_text(storage.join(out_uri, DET_CLASSES_FILE), buf.getvalue(), opts)
    storage.write_text(storage.join(out_uri, "det.map"), "".join(f"{tree.index(c.wnid)}\n" for c in det), opts)
    storage.write_text(storage.join(out_uri, "report.json"), json.dumps(report.as_dict(), indent=2, default=str), opts)

    seen = sum(1 for v in split.values() if v == "seen")
    result = WordTreeResult(out_uri, tree.content_hash(), tree.num_nodes, sum(tree.is_label), seen, len(split) - seen)
    manifest.commit(out_uri, manifest.Manifest(
        stage="wordtree", inputs_fingerprint=fp, config_hash=ch,
        counts={"nodes": result.nodes, "labels": result.labels, "det_seen": seen, "det_unseen": result.unseen,
                "groups": tree.num_groups},
        files=[TREE_FILE, "wordtree.tree", "wordtree.names", "wordtree.labels", "coco.map", "det.map",
               DET_CLASSES_FILE, "report.json"],
        extra={"tree_hash": result.tree_hash, "label_source": source, "orphans": report.orphans},
    ), opts)
    log.info("wordtree: %d nodes, %d labels, DET classes %d seen / %d unseen, hash %s", result.nodes,
             result.labels, seen, result.unseen, result.tree_hash)
    return result


def load_tree(out_uri: str, opts: Mapping[str, Any] | None = None):
    """The WordTree written by this stage."""
    from wordtree_build.tree import WordTree

    return WordTree.from_parquet(storage.join(out_uri, TREE_FILE), opts)


def load_det_classes(out_uri: str, opts: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of det_classes.tsv: wnid, det_id, name, node, split, relation."""
    lines = storage.read_text(storage.join(out_uri, DET_CLASSES_FILE), opts).splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"))) for ln in lines[1:] if ln.strip()]
    for r in rows:
        r["det_id"], r["node"] = int(r["det_id"]), int(r["node"])
    return rows
