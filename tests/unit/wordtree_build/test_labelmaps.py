"""Label maps: COCO-80 / VOC-20 synsets checked against WordNet, DET-200, seen / unseen."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import shared_path
from wordtree_build.build import build_wordtree
from wordtree_build.errors import WordTreeError
from wordtree_build.files import read_map
from wordtree_build.labelmaps import (
    COCO_CATEGORIES,
    VOC_WNIDS,
    coco_darknet_differences,
    coco_wnid,
    det_relations,
    imagenet1k_wnids,
    load_det200,
    map_labels,
    nine_k_wnids,
    seen_unseen,
)
from wordtree_build.tree import WordTree
from wordtree_build.wordnet import wnid_to_synset


def test_coco_table_matches_coco_and_wordnet(wn):
    with open(shared_path("coco_mini", "coco_categories.tsv")) as f:
        real = [(int(r["id"]), r["name"]) for r in csv.DictReader(f, delimiter="\t")]
    assert [(c.id, c.name) for c in COCO_CATEGORIES] == real
    for c in COCO_CATEGORIES:
        assert wnid_to_synset(wn, c.wnid).name() == c.synset, c
    assert coco_wnid(18) == coco_wnid("dog") == "n02084071"
    with pytest.raises(WordTreeError, match="12"):
        coco_wnid(12)  # a gap in COCO's ids


def test_coco_differences_from_darknet_are_the_documented_ones():
    tree = WordTree.from_darknet(str(shared_path("darknet", "9k.tree")))
    dk = [tree.wnids[k] for k in read_map(str(shared_path("darknet", "coco9k.map")))]
    ours = [c.wnid for c in COCO_CATEGORIES]
    differing = {c.name for c, d in zip(COCO_CATEGORIES, dk) if c.wnid != d}
    documented = coco_darknet_differences()
    assert differing == {d["name"] for d in documented}
    assert all(d["note"] for d in documented)
    assert len(ours) == 80 and len(set(ours)) == 80


def test_voc_and_class_tables(wn):
    assert len(VOC_WNIDS) == 20
    for w in VOC_WNIDS.values():
        wnid_to_synset(wn, w)  # raises for a wnid that is not a noun synset
    assert VOC_WNIDS["dog"] == coco_wnid("dog")
    det = load_det200()
    with open(shared_path("imagenet", "det200_synsets.tsv")) as f:
        assert det == [(r[0], int(r[1]), r[2]) for r in csv.reader(f, delimiter="\t")]
    assert imagenet1k_wnids() == [ln.split()[0] for ln in open(shared_path("imagenet", "LOC_synset_mapping.txt"))]
    assert nine_k_wnids() == open(shared_path("darknet", "9k.labels")).read().split()


def test_seen_rule_reproduces_darknets_counts():
    # With darknet's own maps: 38 DET classes identical to a COCO node, 57 related (README).
    tree = WordTree.from_darknet(str(shared_path("darknet", "9k.tree")))
    coco = [tree.wnids[k] for k in read_map(str(shared_path("darknet", "coco9k.map")))]
    det = [tree.wnids[k] for k in read_map(str(shared_path("darknet", "inet9k.map")))]
    rel = det_relations(tree, det, coco)
    identical = sum(r == "identical" for r in rel.values())
    assert identical == 38
    assert identical + sum(r == "related" for r in rel.values()) == 57
    su = seen_unseen(tree, det, coco, rule="related")
    assert sum(v == "seen" for v in su.values()) == 57
    assert sum(v == "seen" for v in seen_unseen(tree, det, coco, rule="identical").values()) == 38
    subtree = seen_unseen(tree, det, coco)
    n_subtree = sum(v == "seen" for v in subtree.values())
    print(f"darknet 9k maps: DET seen by rule subtree {n_subtree}, identical 38, related 57 (paper: 44)")
    assert 38 <= n_subtree <= 57
    assert all(subtree[w] == "seen" for w, r in rel.items() if r == "identical")


def test_seen_unseen_on_our_tree(wn):
    det = [w for w, _, _ in load_det200()]
    coco = [c.wnid for c in COCO_CATEGORIES]
    tree, _ = build_wordtree(list(dict.fromkeys(det + coco)), wn=wn)
    su = seen_unseen(tree, det, coco, rule="related")
    assert len(su) == 200
    dog = [w for w, _, n in load_det200() if n == "dog"][0]
    assert su[dog] == "seen"  # COCO has dog boxes
    for w, s in su.items():  # seen iff a COCO node is on the same root path
        path = set(tree.path(tree.index(w)))
        related = any(tree.index(c) in path or tree.index(w) in set(tree.path(tree.index(c))) for c in coco)
        assert (s == "seen") == related, w
    sub = seen_unseen(tree, det, coco)
    for w, s in sub.items():  # default: seen iff some COCO node is this class or below it
        below = any(tree.index(w) in set(tree.path(tree.index(c))) for c in coco)
        assert (s == "seen") == below, w
    print(f"our tree: DET seen {sum(v == 'seen' for v in sub.values())} / unseen "
          f"{sum(v == 'unseen' for v in sub.values())} (paper 44 / 156)")
    with pytest.raises(WordTreeError, match="seen rule 'x'"):
        seen_unseen(tree, det, coco, rule="x")
    with pytest.raises(WordTreeError, match="n99999999 is not a node"):
        map_labels(tree, ["n99999999"])
