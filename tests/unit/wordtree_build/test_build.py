"""The paper's construction against the paper's figure and darknet's 9k.tree."""

from __future__ import annotations

import pytest

from tests.conftest import shared_path
from wordtree_build.build import build_wordtree
from wordtree_build.errors import WordTreeError
from wordtree_build.files import read_tree_file, tree_text
from wordtree_build.labelmaps import imagenet1k_wnids, nine_k_wnids


def test_imagenet1k_gives_the_papers_1369_nodes(tree_1k):
    tree, report = tree_1k
    assert abs(tree.num_nodes - 1369) <= 4, tree.num_nodes
    assert set(imagenet1k_wnids()) <= set(tree.wnids)
    assert sum(tree.is_label) == 1000
    # Non-label nodes exist only where they branch (two or more children).
    for i, lab in enumerate(tree.is_label):
        if not lab:
            assert len(tree.children[i]) >= 2, tree.wnids[i]
    assert "n06794110" in report.orphans  # street_sign.n.01 lies under abstraction
    assert tree.parents[tree.index("n06794110")] == -1  # extra_root: a top-level node


def test_build_is_deterministic(wn, tree_1k):
    again, _ = build_wordtree(imagenet1k_wnids(), wn=wn)
    assert again.content_hash() == tree_1k[0].content_hash()


def test_keep_root_adds_the_root(wn):
    labels = ["n02085620", "n02123045", "n07739125"]  # chihuahua, tabby, apple
    tree, _ = build_wordtree(labels, wn=wn, keep_root=True)
    assert tree.wnids[0] == "n00001930" and tree.group_sizes[0] == 1  # physical_entity.n.01
    dropped, _ = build_wordtree(labels, wn=wn)
    assert dropped.num_nodes == tree.num_nodes - 1


def _agreement(tree) -> float:
    wnids, parents = read_tree_file(str(shared_path("darknet", "9k.tree")))
    dk = {w: (wnids[p] if p >= 0 else None) for w, p in zip(wnids, parents)}
    ours = {w: (tree.wnids[p] if p >= 0 else None) for w, p in zip(tree.wnids, tree.parents)}
    assert set(ours) == set(dk)
    return sum(ours[w] == dk[w] for w in dk) / len(dk)


def test_9k_parents_agree_with_darknet(tree_9k):
    tree, report = tree_9k
    assert _agreement(tree) >= 0.95
    assert report.seconds < 10
    # darknet's sibling effect: thermos was in the tree before vacuum_flask, so both sit under flask.
    flask = tree.index("n03359566")
    assert tree.parents[tree.index("n04422727")] == tree.parents[tree.index("n04518132")] == flask


def test_9k_with_the_paths_method(wn):
    tree, _ = build_wordtree(nine_k_wnids(), wn=wn, method="paths")
    # Whole paths make every label the parent of its WordNet descendants: fewer leaves than darknet.
    assert 0.9 <= _agreement(tree) < 0.95
    assert tree.parents[tree.index("n04422727")] == tree.index("n04518132")  # thermos under vacuum_flask


def test_9k_tree_is_writable_as_darknet_tree(tree_9k, tmp_path):
    tree, _ = tree_9k
    tree.to_darknet(str(tmp_path), "ours")
    wnids, parents = read_tree_file(str(tmp_path / "ours.tree"))
    assert wnids == tree.wnids and parents == tree.parents
    assert (tmp_path / "ours.tree").read_text() == tree_text(tree)
    for i, p in enumerate(parents):
        assert p < i  # parent before child
    assert tree.group_sizes[0] == sum(1 for p in parents if p == -1)


def test_orphan_policies(wn):
    labels = ["n02085620", "n06794110"]  # chihuahua, street sign
    with pytest.raises(WordTreeError, match=r"street_sign\.n\.01.*line 2"):
        build_wordtree(labels, wn=wn, orphans="fail", source="labels.txt")
    tree, report = build_wordtree(labels, wn=wn, orphans="skip")
    assert "n06794110" not in tree and report.skipped == ["n06794110"]
    with pytest.raises(WordTreeError, match="orphans="):
        build_wordtree(labels, wn=wn, orphans="ignore")
    with pytest.raises(WordTreeError, match="method="):
        build_wordtree(labels, wn=wn, method="bfs")


def test_unknown_and_duplicate_wnids_name_the_line(wn):
    with pytest.raises(WordTreeError, match=r"labels\.txt line 2: unknown wnid.*n99999999"):
        build_wordtree(["n02085620", "n99999999"], wn=wn, source="labels.txt")
    with pytest.raises(WordTreeError, match=r"labels\.txt line 3: duplicate label n02085620 \(first on line 1\)"):
        build_wordtree(["n02085620", "n02123045", "n02085620"], wn=wn, source="labels.txt")
    with pytest.raises(WordTreeError, match="root"):
        build_wordtree(["n02085620"], wn=wn, root="no_such.n.01")


def test_wordnet_loads_without_a_version_map(wn):
    """Only English WordNet 3.0 is read: the reader skips nltk's map from another WordNet version
    (built at every load for multilingual data: ~4 s of CPU), and lookups are unchanged."""
    assert wn.map30 is None and not wn.nomap
    assert wn.synset_from_pos_and_offset("n", 2085620).name() == "chihuahua.n.03"
    assert len(wn.synsets("dog")) >= 8
