"""The WordTree: nodes in darknet order, with the derived sibling groups.

A tree is four parallel lists (``wnids``, ``names``, ``parents``, ``is_label``) in the order
darknet's ``.tree`` files use: a parent always precedes its children, the children of a parent
are contiguous, and a new sibling group (one softmax) starts whenever a node's parent differs
from the previous node's. Group 0 holds the roots (parent -1).

Structural problems (an index out of range, a cycle, a parent after its child, a sibling group
split in two, a duplicate wnid) raise :class:`WordTreeError` naming the source and line
(line n describes node n - 1, as in a ``.tree`` file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wordtree_build.errors import WordTreeError, where


def check_structure(parents: Sequence[int], source: str | None = None) -> None:
    """Raise :class:`WordTreeError` unless `parents` is a valid darknet-ordered forest."""
    n = len(parents)
    seen_parents: set[int] = set()
    for i, p in enumerate(parents):
        at = where(source, i + 1)
        if not isinstance(p, int) or p < -1 or p >= n:
            raise WordTreeError(f"{at}parent index {p!r} out of range (the tree has {n} nodes; -1 marks a root)")
        if p == i:
            raise WordTreeError(f"{at}node {i} is its own parent (cycle)")
        if p > i:
            if _on_cycle(parents, i):
                raise WordTreeError(f"{at}node {i} with parent {p} closes a cycle")
            raise WordTreeError(f"{at}parent {p} comes after its child {i} (parents must precede children)")
        if i > 0 and p != parents[i - 1]:
            if p in seen_parents:
                raise WordTreeError(f"{at}the children of node {p} are not contiguous (its sibling group "
                                    "was interrupted by another parent's children)")
            seen_parents.add(parents[i - 1])


def _on_cycle(parents: Sequence[int], start: int) -> bool:
    node, steps = parents[start], 0
    while 0 <= node < len(parents) and steps <= len(parents):
        if node == start:
            return True
        node, steps = parents[node], steps + 1
    return False


@dataclass
class WordTree:
    """A label hierarchy in darknet order (see the module docstring)."""

    wnids: list[str]
    names: list[str]
    parents: list[int]
    is_label: list[bool]
    source: str | None = field(default=None, compare=False, repr=False)
    # Derived in __post_init__.
    group_of: list[int] = field(init=False, repr=False, compare=False)
    group_offsets: list[int] = field(init=False, repr=False, compare=False)
    group_sizes: list[int] = field(init=False, repr=False, compare=False)
    depth: list[int] = field(init=False, repr=False, compare=False)
    children: list[list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.parents)
        if not (len(self.wnids) == len(self.names) == len(self.is_label) == n):
            raise WordTreeError(f"{where(self.source, None)}wnids, names, parents and is_label differ in length "
                                f"({len(self.wnids)}, {len(self.names)}, {n}, {len(self.is_label)})")
        if n == 0:
            raise WordTreeError(f"{where(self.source, None)}the tree is empty")
        self.parents = [int(p) for p in self.parents]
        check_structure(self.parents, self.source)
        first: dict[str, int] = {}
        for i, w in enumerate(self.wnids):
            if w in first:
                raise WordTreeError(f"{where(self.source, i + 1)}duplicate wnid {w} (first on line {first[w] + 1})")
            first[w] = i
        self._index = first
        self.group_of, self.group_offsets, self.group_sizes = [], [], []
        self.children = [[] for _ in range(n)]
        self.depth = [0] * n
        for i, p in enumerate(self.parents):
            if i == 0 or p != self.parents[i - 1]:
                self.group_offsets.append(i)
                self.group_sizes.append(0)
            self.group_sizes[-1] += 1
            self.group_of.append(len(self.group_offsets) - 1)
            if p >= 0:
                self.children[p].append(i)
                self.depth[i] = self.depth[p] + 1

    @property
    def num_nodes(self) -> int:
        return len(self.parents)

    @property
    def num_groups(self) -> int:
        return len(self.group_offsets)

    @property
    def num_leaves(self) -> int:
        return sum(1 for c in self.children if not c)

    def index(self, wnid: str) -> int:
        try:
            return self._index[wnid]
        except KeyError:
            raise WordTreeError(f"{where(self.source, None)}{wnid} is not a node of this tree "
                                f"({self.num_nodes} nodes)") from None

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._index

    def path(self, node: int) -> list[int]:
        """`node`, its parent, ..., up to its root."""
        if not 0 <= node < self.num_nodes:
            raise WordTreeError(f"node {node} out of range (the tree has {self.num_nodes} nodes)")
        out = [node]
        while self.parents[out[-1]] >= 0:
            out.append(self.parents[out[-1]])
        return out

    def content_hash(self) -> str:
        """SHA-256 (hex) of what a model's outputs mean: wnids, parents and label flags, in order.

        Display names are left out: renaming a class does not change a trained model.
        """
        h = hashlib.sha256()
        for w, p, lab in zip(self.wnids, self.parents, self.is_label):
            h.update(f"{w} {p} {int(lab)}\n".encode())
        return h.hexdigest()

    def stats(self) -> dict[str, Any]:
        return {
            "nodes": self.num_nodes,
            "labels": sum(self.is_label),
            "roots": self.group_sizes[0],
            "groups": self.num_groups,
            "leaves": self.num_leaves,
            "max_depth": max(self.depth) + 1,  # levels, counting the roots as level 1
            "largest_group": max(self.group_sizes),
            "content_hash": self.content_hash(),
        }

    # File formats live in wordtree_build.files; these are the contract's entry points.
    def to_parquet(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        from wordtree_build.files import write_parquet

        write_parquet(self, uri, storage_options)

    @classmethod
    def from_parquet(cls, uri: str, storage_options: Mapping[str, Any] | None = None) -> WordTree:
        from wordtree_build.files import read_parquet

        return read_parquet(uri, storage_options)

    def to_darknet(self, dir_uri: str, stem: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
        from wordtree_build.files import write_darknet

        return write_darknet(self, dir_uri, stem, storage_options)

    @classmethod
    def from_darknet(cls, tree_path: str, names_path: str | None = None,
                     storage_options: Mapping[str, Any] | None = None) -> WordTree:
        from wordtree_build.files import read_darknet

        return read_darknet(tree_path, names_path, storage_options)
