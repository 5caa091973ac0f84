"""darknet files and Parquet: exact round trips and line-precise errors."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.conftest import shared_path
from wordtree_build.errors import WordTreeError
from wordtree_build.files import read_labels, read_map, write_map
from wordtree_build.tree import WordTree


def test_9k_tree_byte_round_trip(tmp_path):
    src = shared_path("darknet", "9k.tree")
    tree = WordTree.from_darknet(str(src), str(shared_path("darknet", "9k.names")))
    s = tree.stats()
    assert (s["nodes"], s["roots"], s["groups"], s["leaves"], s["max_depth"]) == (9418, 4, 1846, 7573, 17)
    out = tree.to_darknet(str(tmp_path), "9k")
    for kind in ("tree", "names", "labels"):
        assert (tmp_path / f"9k.{kind}").read_bytes() == shared_path("darknet", f"9k.{kind}").read_bytes(), kind
    assert set(out) == {"tree", "names", "labels"}


def test_parquet_round_trip_and_hash(tmp_path):
    tree = WordTree(wnids=["a", "b", "c", "d"], names=["A", "B", "C", "D"], parents=[-1, -1, 0, 0],
                    is_label=[False, True, True, True])
    uri = str(tmp_path / "t.parquet")
    tree.to_parquet(uri)
    assert pq.read_table(uri).column_names == ["node", "wnid", "name", "parent", "group", "depth", "is_label"]
    back = WordTree.from_parquet(uri)
    assert back == tree and back.content_hash() == tree.content_hash()
    other = WordTree(wnids=["a", "b", "c", "d"], names=list("ABCD"), parents=[-1, -1, 1, 1], is_label=[True] * 4)
    assert other.content_hash() != tree.content_hash()


def test_parquet_inconsistent_group_is_reported(tmp_path):
    import pyarrow as pa

    tree = WordTree(wnids=["a", "b", "c"], names=list("abc"), parents=[-1, 0, 0], is_label=[True] * 3)
    uri = str(tmp_path / "t.parquet")
    tree.to_parquet(uri)
    t = pq.read_table(uri)
    t = t.set_column(t.column_names.index("group"), "group", pa.array([0, 1, 2], pa.int32()))
    pq.write_table(t, uri)
    with pytest.raises(WordTreeError, match=r"t\.parquet row 2: field group is 2"):
        WordTree.from_parquet(uri)


@pytest.mark.parametrize("text, message", [
    ("a -1\nb 0\nc 1\nd 7\n", r"line 4: parent index 7 out of range"),
    ("a -1\nb 2\nc 1\n", r"line 2: node 1 with parent 2 closes a cycle"),
    ("a -1\nb 3\nc 0\nd 0\n", r"line 2: parent 3 comes after its child"),
    ("a -1\nb -1\nc 0\nd 1\ne 0\n", r"line 5: the children of node 0 are not contiguous"),
    ("a -1\nb 0\nb 0\n", r"line 3: duplicate wnid b"),
    ("a -1\nb zero\n", r"line 2: parent index 'zero' is not an integer"),
    ("a -1\nb\n", r"line 2: expected '<wnid> <parent index>'"),
])
def test_malformed_tree_files(tmp_path, text, message):
    p = tmp_path / "bad.tree"
    p.write_text(text)
    with pytest.raises(WordTreeError, match=r"bad\.tree " + message):
        WordTree.from_darknet(str(p))


def test_labels_and_maps(tmp_path):
    labels = read_labels(str(shared_path("imagenet", "LOC_synset_mapping.txt")))
    assert len(labels) == 1000 and labels[0] == "n01440764"
    dup = tmp_path / "dup.labels"
    dup.write_text("n01440764\nn01443537\nn01440764\n")
    with pytest.raises(WordTreeError, match=r"dup\.labels line 3: duplicate label n01440764 \(first on line 1\)"):
        read_labels(str(dup))
    m = read_map(str(shared_path("darknet", "coco9k.map")), num_nodes=9418)
    assert len(m) == 80
    write_map(m, str(tmp_path / "c.map"))
    assert (tmp_path / "c.map").read_bytes() == shared_path("darknet", "coco9k.map").read_bytes()
    with pytest.raises(WordTreeError, match=r"c\.map line 1: node index 5177 out of range"):
        read_map(str(tmp_path / "c.map"), num_nodes=100)
    with pytest.raises(WordTreeError, match="file not found"):
        read_labels(str(tmp_path / "missing.labels"))
