"""Sample data: real formats (pycocotools, ElementTree, Pillow read every file), real WordNet
classes, counts, the seen/unseen design, and determinism (same seed, same bytes)."""

from __future__ import annotations

import colorsys
import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipelines import sample_data as sd
from pipelines.sample_data import COARSE, FINE, OBJECT_SIZE, SCALES, SampleDataError, det_classes, generate
from tests.conftest import shared_path

SMALL = SCALES["small"]


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> tuple[Path, sd.SampleSummary]:
    root = tmp_path_factory.mktemp("sample") / "small"
    return root, generate(str(root), seed=0, scale="small")


@pytest.fixture(scope="session")
def wn():
    from wordtree_build.wordnet import load_wordnet

    return load_wordnet()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != sd.MARKER}


def _image_files(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in _files(root).items() if k.lower().endswith((".jpg", ".jpeg"))}


# ---- the class design against real WordNet and the real label lists ------------------------


def test_every_class_is_a_real_synset_and_fine_classes_are_hyponyms_of_their_coarse_class(wn):
    from wordtree_build.wordnet import wnid_to_synset

    def ancestors(s):
        return set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))

    coarse = {c.name: wnid_to_synset(wn, c.wnid) for c in COARSE}
    for c in COARSE:
        # The coarse synset is what the COCO name means: the name is one of its lemmas.
        assert c.name in [lemma.lower() for lemma in coarse[c.name].lemma_names()], c
    for f in FINE:
        s = wnid_to_synset(wn, f.wnid)
        above = {name for name, cs in coarse.items() if cs in ancestors(s)}
        if f.coarse is None:
            assert above == set(), f"{f.name} is meant to be unrelated but lies below {above}"
        else:
            assert above == {f.coarse}, f"{f.name} ({s.name()}) lies below {above}, expected {f.coarse}"
    for f in FINE:  # coarse classes are not each other's hyponyms either
        assert f.wnid not in {c.wnid for c in COARSE}
    assert len({c.wnid for c in COARSE} | {f.wnid for f in FINE}) == len(COARSE) + len(FINE)


def test_fine_classes_are_ilsvrc_2012_classes_with_their_names():
    mapping = {}
    for line in shared_path("imagenet", "LOC_synset_mapping.txt").read_text().splitlines():
        wnid, words = line.split(" ", 1)
        mapping[wnid] = words.split(",")[0].strip()
    for f in FINE:
        assert mapping.get(f.wnid) == f.name, f


def test_coarse_classes_are_real_coco_categories_and_det200_classes():
    coco = {}
    for line in shared_path("coco_mini", "coco_categories.tsv").read_text().splitlines()[1:]:
        cid, name, sup = line.split("\t")
        coco[name] = (int(cid), sup)
    det200 = {}
    for line in shared_path("imagenet", "det200_synsets.tsv").read_text().splitlines():
        wnid, _, name = line.split("\t")
        det200[wnid] = name
    # darknet's own COCO -> WordNet mapping: coco9k.map line k is the 9k.tree node of COCO class k.
    tree = shared_path("darknet", "9k.tree").read_text().split("\n")
    nodes = [int(x) for x in shared_path("darknet", "coco9k.map").read_text().split()]
    coco_in_order = sorted(coco, key=lambda n: coco[n][0])
    darknet_wnid = {name: tree[nodes[k]].split()[0] for k, name in enumerate(coco_in_order)}
    for c in COARSE:
        assert coco[c.name] == (c.coco_id, c.supercategory), c
        assert det200.get(c.wnid) == c.name, c
        assert darknet_wnid[c.name] == c.wnid, c


def test_looks_are_distinct_and_fine_looks_leave_the_dull_coarse_range():
    coarse_shapes = [c.shape for c in COARSE]
    unrelated_shapes = [f.shape for f in FINE if f.coarse is None]
    assert len(set(coarse_shapes + unrelated_shapes)) == len(coarse_shapes) + len(unrelated_shapes)
    for c in COARSE:
        looks = [(f.pattern, f.color, f.color2) for f in FINE if f.coarse == c.name]
        assert 2 <= len(looks) == len(set(looks)), c.name
    for f in FINE:
        hsv = [colorsys.rgb_to_hsv(*(v / 255 for v in col)) for col in (f.color, f.color2)]
        # _dull() draws saturation <= .25 and value in [.35, .7]: every fine look has a colour outside.
        assert any(s > 0.25 or v < 0.35 or v > 0.7 for _, s, v in hsv), f.name


def test_det_class_list_mirrors_the_seen_unseen_split():
    classes = det_classes()
    assert [c[1] for c in classes] == list(range(1, len(classes) + 1))
    status = {wnid: st for wnid, _, _, st in classes}
    assert {w for w, st in status.items() if st == "seen"} == {c.wnid for c in COARSE}
    assert {w for w, st in status.items() if st == "unseen"} == {f.wnid for f in FINE}
    # The paper: 44 of 200 DET classes seen in COCO (22%); here a similar minority.
    assert 0.15 < len(COARSE) / len(classes) < 0.35


# ---- the generated files, read back with the real libraries -----------------------------------


def test_small_summary_counts_and_speed(small):
    root, s = small
    assert (s.coco_train_images, s.coco_val_images) == (SMALL["coco_train"], SMALL["coco_val"])
    assert s.imagenet_images == SMALL["cls_per_class"] * len(FINE) and s.imagenet_classes == len(FINE)
    assert s.det_val_images == SMALL["det_val"] and (s.det_seen, s.det_unseen) == (len(COARSE), len(FINE))
    assert s.seconds < 60, "the small scale must generate in under a minute"
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    text = str(s)
    for n in (s.coco_train_images, s.coco_train_boxes, s.imagenet_images, s.det_val_boxes):
        assert str(n) in text


def test_coco_sets_load_in_pycocotools_and_match_the_images(small):
    root, s = small
    image_ids: set[int] = set()
    ann_ids: set[int] = set()
    for split, n_images, n_boxes in (("train", s.coco_train_images, s.coco_train_boxes),
                                     ("val", s.coco_val_images, s.coco_val_boxes)):
        coco = COCO(str(root / "coco" / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n_images and len(coco.getAnnIds()) == n_boxes
        assert {(c["id"], c["name"], c["supercategory"]) for c in coco.loadCats(coco.getCatIds())} == \
            {(c.coco_id, c.name, c.supercategory) for c in COARSE}
        files = sorted(p.name for p in (root / "coco" / "images" / split).iterdir())
        assert files == sorted(im["file_name"] for im in coco.dataset["images"])
        per_image = []
        for im in coco.dataset["images"]:
            with Image.open(root / "coco" / "images" / split / im["file_name"]) as pil:
                pil.load()
                assert pil.format == "JPEG" and pil.size == (im["width"], im["height"])
            assert SMALL["side"][0] <= max(im["width"], im["height"]) <= SMALL["side"][1]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
            per_image.append(len(anns))
            for a in anns:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"] and w > 0 and h > 0
                assert a["iscrowd"] == 0 and 0 < a["area"] <= w * h
        assert 1 <= min(per_image) and max(per_image) <= 6 and len(set(per_image)) >= 4
        counts = {c.coco_id: len(coco.getAnnIds(catIds=[c.coco_id])) for c in COARSE}
        assert min(counts.values()) > 0, counts
        assert not image_ids & set(coco.getImgIds()) and not ann_ids & set(coco.getAnnIds())
        image_ids |= set(coco.getImgIds())
        ann_ids |= set(coco.getAnnIds())


def test_coco_boxes_vary_in_size_and_shape_and_fills_mix_dull_and_fine_looks(small):
    root, _ = small
    coco = COCO(str(root / "coco" / "annotations" / "instances_train.json"))
    rel_size, aspect, saturation = [], [], []
    for a in coco.loadAnns(coco.getAnnIds()):
        im = coco.imgs[a["image_id"]]
        _, _, w, h = a["bbox"]
        rel_size.append(max(w, h) / min(im["width"], im["height"]))
        aspect.append(w / h)
        if a["area"] > 1500:  # big enough that the mask interior dominates its outline
            mask = coco.annToMask(a).astype(bool)
            hsv = np.asarray(Image.open(root / "coco" / "images" / "train" / im["file_name"]).convert("HSV"))
            saturation.append(np.median(hsv[..., 1][mask]) / 255)
    assert OBJECT_SIZE[0] * 0.8 < min(rel_size) < OBJECT_SIZE[0] * 1.5 and max(rel_size) > 0.5
    assert min(aspect) < 0.6 and max(aspect) > 1.6
    # A coarse object is dull (saturation <= .25 before noise and JPEG) or wears one of its fine
    # classes' looks (1 in 3 or 4 dull): both kinds are common, as COCO's boxes hold every breed.
    saturation = np.array(saturation)
    assert len(saturation) > 50
    assert 0.15 < np.mean(saturation < 0.3) < 0.6, np.mean(saturation < 0.3)


def test_imagenet_layout_and_images(small):
    root, _ = small
    train = root / "imagenet" / "train"
    assert sorted(p.name for p in train.iterdir()) == sorted(f.wnid for f in FINE)
    for f in FINE:
        names = sorted(p.name for p in (train / f.wnid).iterdir())
        assert names == sorted(f"{f.wnid}_{n}.JPEG" for n in range(1, SMALL["cls_per_class"] + 1))
        for name in names:
            with Image.open(train / f.wnid / name) as pil:
                pil.load()
                assert pil.format == "JPEG" and pil.mode == "RGB"
    mapping = (root / "imagenet" / "LOC_synset_mapping.txt").read_text().splitlines()
    assert mapping == [f"{f.wnid} {f.name}" for f in sorted(FINE, key=lambda f: f.wnid)]


def test_fine_classes_are_separable_by_their_look(small):
    """A nearest-centroid classifier on the colours of vivid pixels tells most fine classes apart."""
    root, _ = small

    def feature(path: Path) -> np.ndarray:
        im = Image.open(path).convert("RGB").resize((96, 96))
        rgb = np.asarray(im).reshape(-1, 3)
        hsv = np.asarray(im.convert("HSV")).reshape(-1, 3)
        vivid = (hsv[:, 1] > 150) | (hsv[:, 2] < 50) | ((hsv[:, 2] > 235) & (hsv[:, 1] < 40))
        q = rgb[vivid] // 64
        hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64) / max(1, len(q))
        return np.sqrt(hist)

    feats, labels, half = [], [], []
    for ci, f in enumerate(FINE):
        for n in range(1, SMALL["cls_per_class"] + 1):
            feats.append(feature(root / "imagenet" / "train" / f.wnid / f"{f.wnid}_{n}.JPEG"))
            labels.append(ci)
            half.append(n % 2)
    x, y, half = np.array(feats), np.array(labels), np.array(half)
    centroids = np.stack([x[(half == 0) & (y == c)].mean(0) for c in range(len(FINE))])
    test = half == 1
    pred = np.argmin(((x[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    # Chance is 1/19; colour alone cannot split every pair (school bus vs golden retriever differ in shape).
    assert (pred == y[test]).mean() > 0.7


def test_det_val_xml_images_and_class_files(small):
    root, s = small
    ann_dir = root / "imagenet_det" / "Annotations" / "DET" / "val"
    img_dir = root / "imagenet_det" / "Data" / "DET" / "val"
    classes = {}
    for line in (root / "imagenet_det" / "det_classes.tsv").read_text().splitlines():
        wnid, det_id, name = line.split("\t")
        classes[wnid] = (int(det_id), name)
    assert classes == {w: (i, n) for w, i, n, _ in det_classes()}
    status = dict(line.split("\t") for line in (root / "imagenet_det" / "seen_unseen.tsv").read_text().splitlines())
    assert status == {w: st for w, _, _, st in det_classes()}

    xmls = sorted(ann_dir.glob("*.xml"))
    assert len(xmls) == s.det_val_images == len(list(img_dir.glob("*.JPEG")))
    seen_names, n_boxes = [], 0
    for path in xmls:
        ann = ET.parse(path).getroot()
        stem = ann.findtext("filename")
        assert stem == path.stem
        with Image.open(img_dir / f"{stem}.JPEG") as pil:
            pil.load()
            size = pil.size
        assert size == (int(ann.findtext("size/width")), int(ann.findtext("size/height")))
        objects = ann.findall("object")
        assert 1 <= len(objects) <= 5
        for obj in objects:
            seen_names.append(obj.findtext("name"))
            b = {t: int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "xmax", "ymin", "ymax")}
            assert 0 <= b["xmin"] < b["xmax"] < size[0] and 0 <= b["ymin"] < b["ymax"] < size[1], path
        n_boxes += len(objects)
    assert n_boxes == s.det_val_boxes
    assert set(seen_names) == set(classes), "every DET class is boxed at least once"
    n_seen = sum(status[n] == "seen" for n in seen_names)
    assert 0 < n_seen < len(seen_names)


def _tag_paths(el: ET.Element, prefix: str = "") -> set[str]:
    here = f"{prefix}/{el.tag}"
    return {here}.union(*[_tag_paths(c, here) for c in el])


def test_det_xml_has_the_structure_of_the_real_ilsvrc_files(small):
    root, _ = small
    real = ET.parse(shared_path("imagenet", "det_val2", "Annotations", "ILSVRC2012_val_00000018.xml")).getroot()
    ours = ET.parse(next((root / "imagenet_det" / "Annotations" / "DET" / "val").glob("*.xml"))).getroot()
    assert _tag_paths(ours) == _tag_paths(real)


def test_coco_json_has_the_fields_of_the_real_files(small):
    root, _ = small
    real = json.loads(shared_path("coco_mini", "annotations", "instances_val2017.json").read_text())
    ours = json.loads((root / "coco" / "annotations" / "instances_val.json").read_text())
    assert set(real) <= set(ours)
    for key in ("images", "annotations", "categories"):
        assert set(real[key][0]) - {"coco_url", "flickr_url", "date_captured"} <= set(ours[key][0]), key


def test_ground_truth_as_detections_scores_perfect_ap(small):
    """COCOeval accepts the generated set end to end: its own boxes as detections give AP 1."""
    root, _ = small
    gt = COCO(str(root / "coco" / "annotations" / "instances_val.json"))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):  # summarize() prints its table
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP at IoU .5


# ---- determinism, reuse and errors (the internal `tiny` scale keeps these fast) ---------------


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = generate(str(tmp_path / "a"), seed=7, scale="tiny")
    generate(str(tmp_path / "b"), seed=7, scale="tiny")
    generate(str(tmp_path / "c"), seed=8, scale="tiny")
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb
    assert len(_image_files(tmp_path / "a")) == a.coco_train_images + a.coco_val_images + a.imagenet_images \
        + a.det_val_images
    ia, ic = _image_files(tmp_path / "a"), _image_files(tmp_path / "c")
    assert ia.keys() == ic.keys() and all(ia[k] != ic[k] for k in ia)
    assert fa.keys() == fc.keys() and fa["coco/annotations/instances_train.json"] != fc["coco/annotations/instances_train.json"]


def test_fsspec_uri_output_matches_local_output(tmp_path):
    import fsspec

    generate(str(tmp_path / "local"), seed=3, scale="tiny")
    generate("memory://y9k-sample-test", seed=3, scale="tiny")
    fs = fsspec.filesystem("memory")
    try:
        for rel, data in _files(tmp_path / "local").items():
            assert fs.cat_file(f"/y9k-sample-test/{rel}") == data, rel
    finally:
        fs.rm("/y9k-sample-test", recursive=True)


def test_complete_output_is_reused_and_other_seed_replaces_it(tmp_path):
    out = tmp_path / "s"
    first = generate(str(out), seed=1, scale="tiny")
    assert not first.reused
    again = generate(str(out), seed=1, scale="tiny")
    assert again.reused and again.to_dict() | {"reused": False} == first.to_dict()
    stale = out / "coco" / "images" / "train" / "stale.jpg"
    stale.write_bytes(b"left over")
    before = _files(out)
    replaced = generate(str(out), seed=2, scale="tiny")
    assert not replaced.reused and not stale.exists()
    after = _files(out)
    assert after.keys() == before.keys() - {"coco/images/train/stale.jpg"}
    assert after != before
    assert json.loads((out / sd.MARKER).read_text())["seed"] == 2
    forced = generate(str(out), seed=2, scale="tiny", force=True)
    assert not forced.reused and _files(out) == after


def test_foreign_data_is_never_overwritten(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "mine.txt").write_text("precious")
    with pytest.raises(SampleDataError, match=r"coco/ without a sample_data.json") as e:
        generate(str(tmp_path), seed=0, scale="tiny")
    assert str(tmp_path) in str(e.value) and type(e.value).user_facing
    assert (tmp_path / "coco" / "mine.txt").read_text() == "precious"


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale="huge"), r"unknown scale 'huge'; choose one of tiny, small, medium"),
    (dict(seed=-1), r"seed must be a non-negative integer, got -1"),
    (dict(seed="0"), r"seed must be a non-negative integer, got '0'"),
])
def test_bad_arguments_are_reported(tmp_path, kwargs, message):
    with pytest.raises(SampleDataError, match=message):
        generate(str(tmp_path / "x"), **{"seed": 0, "scale": "tiny", **kwargs})
    assert not (tmp_path / "x").exists()


def test_malformed_marker_names_the_file(tmp_path):
    (tmp_path / sd.MARKER).write_text("{not json")
    with pytest.raises(SampleDataError, match=rf"{sd.MARKER}: malformed JSON at line 1"):
        generate(str(tmp_path), seed=0, scale="tiny")


def test_contact_sheet_draws_every_set(tmp_path):
    generate(str(tmp_path / "d"), seed=0, scale="tiny")
    png = sd.contact_sheet(str(tmp_path / "d"), str(tmp_path / "sheet.png"), per_row=3, tile=100)
    with Image.open(io.BytesIO(Path(png).read_bytes())) as sheet:
        assert sheet.format == "PNG" and sheet.size == (300, 3 * 114)
        # Each row holds real image content, not just the white page.
        arr = np.asarray(sheet.convert("L"))
        for r in range(3):
            assert arr[r * 114: r * 114 + 100].std() > 10


# ---- the second world ('depot'): independent classes and looks, same formats -----------------


def test_depot_is_built_from_other_real_classes_and_hierarchy(wn):
    """Real COCO categories the ingest maps to their synsets, ILSVRC-2012 hyponyms under them
    (or unrelated ones), DET-200 classes among the unseen, nothing shared with the zoo world."""
    from wordtree_build.labelmaps import coco_wnid, load_det200
    from wordtree_build.wordnet import wnid_to_synset

    depot, zoo = sd.world("depot"), sd.world("zoo")
    real = {}
    for line in shared_path("coco_mini", "coco_categories.tsv").read_text().splitlines()[1:]:
        cid, name, supercat = line.split("\t")[:3]
        real[int(cid)] = (name, supercat)
    ilsvrc = dict(line.split(" ", 1) for line in shared_path("imagenet", "LOC_synset_mapping.txt").read_text().splitlines())
    for c in depot.coarse:
        assert real[c.coco_id] == (c.name, c.supercategory) and coco_wnid(c.name) == c.wnid, c
    coarse = {c.name: wnid_to_synset(wn, c.wnid) for c in depot.coarse}
    for f in depot.fine:
        assert ilsvrc[f.wnid].split(",")[0].strip() == f.name, f
        above = {n for n, cs in coarse.items() if cs in wnid_to_synset(wn, f.wnid).closure(lambda x: x.hypernyms())}
        assert above == ({f.coarse} if f.coarse else set()), (f, above)
    det200 = {w for w, _, _ in load_det200()}
    assert len({f.wnid for f in depot.fine} & det200) >= 10  # e.g. wine bottle, golf ball, bow tie, ladybug
    wnids = lambda w: {c.wnid for c in w.coarse} | {f.wnid for f in w.fine}  # noqa: E731
    assert not wnids(depot) & wnids(zoo)
    shapes = lambda w: {c.shape for c in w.coarse} | {f.shape for f in w.fine if f.shape}  # noqa: E731
    assert not shapes(depot) & shapes(zoo)
    looks = [sd._fine_look(f) for f in depot.fine if f.coarse] + [(f.shape, *sd._fine_look(f)) for f in depot.fine
                                                                     if not f.coarse]
    assert len(set(looks)) == len(looks)


@pytest.fixture(scope="module")
def depot_tiny(tmp_path_factory) -> tuple[Path, sd.SampleSummary]:
    root = tmp_path_factory.mktemp("depot") / "d"
    return root, generate(str(root), seed=5, scale="tiny", world_name="depot")


def test_depot_writes_the_same_formats_deterministically(depot_tiny, tmp_path):
    root, s = depot_tiny
    assert (s.world, s.coco_categories, s.imagenet_classes, s.det_seen, s.det_unseen) == ("depot", 6, 21, 6, 21)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "coco" / "annotations" / "instances_train.json"))
    assert {c["name"] for c in gt.dataset["categories"]} == {c.name for c in sd.DEPOT_COARSE}
    assert len(gt.dataset["annotations"]) == s.coco_train_boxes
    assert sorted(p.name for p in (root / "imagenet" / "train").iterdir()) == sorted(f.wnid for f in sd.DEPOT_FINE)
    names = {o.findtext("name") for x in (root / "imagenet_det" / "Annotations" / "DET" / "val").glob("*.xml")
             for o in ET.parse(x).getroot().iter("object")}
    assert names <= {w for w, *_ in det_classes(sd.DEPOT)}
    again = generate(str(tmp_path / "again"), seed=5, scale="tiny", world_name="depot")
    same = {"out_uri": s.out_uri, "seconds": s.seconds}
    assert _files(tmp_path / "again") == _files(root) and again.to_dict() | same == s.to_dict()
    zoo = generate(str(tmp_path / "zoo"), seed=5, scale="tiny")
    assert not set(_image_files(root).values()) & set(_image_files(tmp_path / "zoo").values())
    # The same directory switched to the other world is replaced, not reused.
    switched = generate(str(tmp_path / "again"), seed=5, scale="tiny")
    assert not switched.reused and _files(tmp_path / "again") == _files(tmp_path / "zoo") and zoo.world == "zoo"


def test_depot_objects_are_smaller_and_more_numerous_than_the_zoos(depot_tiny, tmp_path):
    """Measured on the written COCO-style boxes, not read from the world's settings."""
    def stats(root: Path) -> tuple[float, float]:
        doc = json.loads((root / "coco" / "annotations" / "instances_train.json").read_text())
        size = {im["id"]: min(im["width"], im["height"]) for im in doc["images"]}
        sides = [max(a["bbox"][2], a["bbox"][3]) / size[a["image_id"]] for a in doc["annotations"]]
        return float(np.median(sides)), len(doc["annotations"]) / len(doc["images"])

    generate(str(tmp_path / "zoo"), seed=5, scale="tiny")
    (d_side, d_count), (z_side, z_count) = stats(depot_tiny[0]), stats(tmp_path / "zoo")
    assert d_side < z_side and d_count > z_count


def test_unknown_world_is_refused(tmp_path):
    with pytest.raises(SampleDataError, match=r"unknown world 'mars'; choose one of zoo, depot"):
        generate(str(tmp_path / "x"), seed=0, scale="tiny", world_name="mars")
    assert not (tmp_path / "x").exists()


def test_config_and_cli_offer_exactly_the_generators_worlds():
    from pipelines.cli.general import SAMPLE_WORLDS

    assert SAMPLE_WORLDS == tuple(sd.WORLDS)


def test_wordtree_stage_picks_up_the_depot_labels(depot_tiny, tmp_path):
    """The wordtree stage, on the depot world's files, finds its coarse, fine and DET classes
    and splits the DET classes into the world's seen / unseen ground truth."""
    from pipelines.cli.common import load_tree
    from pipelines.config import load_config
    from pipelines.layout import SAMPLE_DATA, Layout
    from pipelines.stages.ingest import sources_from_config
    from pipelines.stages.wordtree import load_det_classes, run_wordtree

    root, s = depot_tiny
    cfg = load_config("demo", [f"storage.root={tmp_path}"])
    for key, rel in SAMPLE_DATA.items():
        setattr(cfg.data, key, str(root / rel))
    result = run_wordtree(cfg.wordtree, cfg.data, sources_from_config(cfg.data, cfg.storage.options),
                          Layout.of(cfg.storage).wordtree, cfg.storage.options)
    # The commands find the tree the stage wrote where the layout says it is.
    assert load_tree(cfg.storage, None).content_hash() == result.tree_hash
    truth = dict(line.split("\t") for line in (root / "imagenet_det" / "seen_unseen.tsv").read_text().splitlines())
    got = {r["wnid"]: r["split"] for r in load_det_classes(str(tmp_path / "wordtree"))}
    assert got == truth and (result.seen, result.unseen) == (s.det_seen, s.det_unseen)
    assert result.labels >= len(sd.DEPOT_COARSE) + len(sd.DEPOT_FINE)
