"""Build a WordTree from WordNet the way the YOLO9000 paper describes (Section 4).

Steps, for a list of label synsets (ImageNet wnids):

1. Every label's hypernym paths (hypernyms and instance hypernyms) down from the root
   (``physical_entity.n.01`` by default). Labels with no such path are *orphans* (e.g.
   ``street_sign.n.01``, which lies under ``abstraction.n.06``), handled by a policy:
   ``extra_root`` makes each one a top-level node of its own, ``skip`` leaves it out with a
   warning, ``fail`` raises.
2. The paths of labels that have exactly one path are added first, in input order.
3. Then, repeatedly, among all remaining labels and all their paths, the path that adds the
   fewest new nodes is added. A path is attached below its deepest node already in the tree,
   so the nodes it adds are the ones under that node. Ties go to the label that comes first
   in the input, then to its path that comes first when paths are ordered by the wnids of
   their hypernyms (lowest WordNet offset first, level by level from the root). A label
   that already entered the tree as an inner node of another path keeps that place.
4. WordNet nodes that are not labels and have a single child are removed (their child
   moves up: a one-way softmax carries no information). The root itself is always
   P = 1, so it is dropped too and its children become the roots, as in darknet's
   ``9k.tree``; ``keep_root=True`` keeps it (counted as one node).
5. Nodes are numbered as darknet numbers them: the roots first, then depth-first, each
   node's children listed together right before their own subtrees (the order of
   ``9k.tree``); siblings keep the order in which they entered the tree.

Two ways to grow the tree (``method``):

- ``paths`` (default): the steps above, literally. ImageNet-1k gives 1,368 nodes (the paper
  says 1,369), 1,369 with ``keep_root=True``.
- ``incremental``: how darknet's ``9k.tree`` was evidently grown. Labels are inserted one at a
  time into the compressed tree (:class:`_Trie`): single-path labels first, then the others
  in input order, each on the path that adds the fewest nodes. A label inserted after one of
  its WordNet descendants does not take it over but becomes its sibling. From ``9k.labels``
  this reproduces the parent of 95.4% of darknet's nodes (``paths``: 91.8%; most of the gap
  is that sibling effect: ``thermos`` beside ``vacuum_flask``, ``muscat`` beside ``grape``).
  ImageNet-1k gives 1,357 nodes.

Everything is deterministic for a given label list and WordNet 3.0. WordNet is read through
nltk (imported lazily by :mod:`wordtree_build.wordnet`).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wordtree_build.errors import WordTreeError, where
from wordtree_build.tree import WordTree

log = logging.getLogger(__name__)

ORPHAN_POLICIES = ("extra_root", "skip", "fail")
DEFAULT_ROOT = "physical_entity.n.01"


@dataclass
class BuildReport:
    """What the construction did, for logs, manifests and the CLI."""

    labels: int
    root: str
    single_path: int = 0
    multi_path: int = 0
    orphans: list[str] = field(default_factory=list)
    orphan_policy: str = "extra_root"
    skipped: list[str] = field(default_factory=list)
    dropped_single_child: int = 0
    nodes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _wnid(synset: Any) -> str:
    return f"{synset.pos()}{synset.offset():08d}"


def display_name(synset: Any) -> str:
    """The first lemma with spaces, as darknet's ``9k.names`` writes it (``body part``)."""
    return synset.lemma_names()[0].replace("_", " ")


def resolve_labels(wn: Any, wnids: Sequence[str], source: str | None = None) -> list[Any]:
    """Synsets for `wnids`; unknown or duplicate wnids raise naming the source and line."""
    from wordtree_build.wordnet import wnid_to_synset

    first: dict[str, int] = {}
    out = []
    for i, w in enumerate(wnids):
        w = w.strip() if isinstance(w, str) else w
        if w in first:
            raise WordTreeError(f"{where(source, i + 1)}duplicate label {w} (first on line {first[w] + 1})")
        first[w] = i
        try:
            out.append(wnid_to_synset(wn, w))
        except ValueError as e:
            raise WordTreeError(f"{where(source, i + 1)}unknown wnid: {e}") from None
    return out


def _resolve_root(wn: Any, root: str) -> Any:
    from wordtree_build.wordnet import wnid_to_synset

    try:
        return wnid_to_synset(wn, root) if root[:1] == "n" and root[1:].isdigit() else wn.synset(root)
    except Exception:
        raise WordTreeError(f"root {root!r} is not a WordNet noun synset (e.g. physical_entity.n.01)") from None


class _Paths:
    """Hypernym paths from the root down to a synset, as tuples of wnids (memoized)."""

    def __init__(self, root: Any) -> None:
        self.root = _wnid(root)
        self.memo: dict[str, tuple[tuple[str, ...], ...]] = {}
        self.synsets: dict[str, Any] = {}

    def __call__(self, s: Any) -> tuple[tuple[str, ...], ...]:
        key = _wnid(s)
        if key in self.memo:
            return self.memo[key]
        self.synsets[key] = s
        if key == self.root:
            out: tuple[tuple[str, ...], ...] = ((key,),)
        else:
            found = []
            # nltk keeps pointers in a set (order varies between processes): sort by wnid.
            for h in sorted(s.hypernyms() + s.instance_hypernyms(), key=_wnid):
                for p in self(h):
                    if p + (key,) not in found:  # a hypernym reached twice gives one path
                        found.append(p + (key,))
            out = tuple(found)
        self.memo[key] = out
        return out


class _Trie:
    """The compressed tree grown one label at a time (``method='incremental'``).

    A label goes under the deepest tree node on its chosen path. A WordNet node is added only
    where the new path branches off the path of a node already there (so every inner node
    that is not a label has two or more children), and a label never takes over nodes that
    entered before it: a label inserted after one of its WordNet descendants becomes that
    descendant's sibling. That is how darknet's ``9k.tree`` was grown (``thermos`` sits beside
    ``vacuum_flask`` under ``flask``; ``muscat`` beside ``grape`` under ``edible_fruit``).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.parent: dict[str, str | None] = {root: None}
        self.kids: dict[str, list[str]] = {root: []}
        self.path_of: dict[str, tuple[str, ...]] = {root: (root,)}

    def insert(self, label: str, path: tuple[str, ...]) -> None:
        if label in self.parent:
            return  # entered earlier as a branching node: it keeps that place
        k = max(i for i in range(len(path) - 1) if path[i] in self.parent)
        at = path[k]
        for c in self.kids[at]:
            other = self.path_of[c]
            common = 0
            while common < min(len(path), len(other)) and path[common] == other[common]:
                common += 1
            branch = path[common - 1]
            if common - 1 > k and branch != label:  # the paths part below `at`: add the branching node
                self.kids[at][self.kids[at].index(c)] = branch
                self.parent[branch], self.kids[branch], self.path_of[branch] = at, [c], path[:common]
                self.parent[c] = branch
                at = branch
                break
        self.parent[label], self.kids[label], self.path_of[label] = at, [], path
        self.kids[at].append(label)


def _greedy(multi: list[str], all_paths: dict[str, tuple[tuple[str, ...], ...]], deepest_in_tree: Any,
            place: Any, placed: set[str]) -> None:
    """Step 3 of method='paths': among all remaining labels and paths, the cheapest path first.

    Costs only fall as the tree grows, so each added node re-prices the paths through it (an
    index node -> paths) and pushes fresh entries; stale heap entries are skipped.
    """
    rank = {w: i for i, w in enumerate(multi)}
    cost: dict[tuple[str, int], int] = {}
    through: dict[str, list[tuple[str, int]]] = {}
    heap: list[tuple[int, int, int, str]] = []
    for w in multi:
        for j, p in enumerate(all_paths[w]):
            c = len(p) - 1 - deepest_in_tree(p)
            cost[(w, j)] = c
            heapq.heappush(heap, (c, rank[w], j, w))
            for node in p:
                through.setdefault(node, []).append((w, j))
    while heap:
        c, _, j, w = heapq.heappop(heap)
        if w in placed or cost[(w, j)] != c:
            continue  # placed already, or a stale price
        for node in place(w, all_paths[w][j]):
            for w2, j2 in through.get(node, ()):
                if w2 in placed:
                    continue
                p2 = all_paths[w2][j2]
                c2 = len(p2) - 1 - deepest_in_tree(p2)
                if c2 != cost[(w2, j2)]:
                    cost[(w2, j2)] = c2
                    heapq.heappush(heap, (c2, rank[w2], j2, w2))


METHODS = ("paths", "incremental")


def build_wordtree(wnids: Sequence[str], root: str = DEFAULT_ROOT, orphans: str = "extra_root", wn: Any = None,
                   *, keep_root: bool = False, method: str = "paths",
                   source: str | None = None) -> tuple[WordTree, BuildReport]:
    """The WordTree over the label synsets `wnids` (see the module docstring for the steps).

    `method`: ``paths`` (default) is the paper's construction as the module docstring gives
    it; ``incremental`` grows the compressed tree label by label as darknet's ``9k.tree`` was
    grown (:class:`_Trie`; step 3 then takes the labels in input order).
    `source` names the label file in error messages (line n = wnids[n - 1]).
    """
    if orphans not in ORPHAN_POLICIES:
        raise WordTreeError(f"orphans={orphans!r}: expected one of {', '.join(ORPHAN_POLICIES)}")
    if method not in METHODS:
        raise WordTreeError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    t0 = time.perf_counter()
    if wn is None:
        from wordtree_build.wordnet import load_wordnet

        wn = load_wordnet()
    synsets = resolve_labels(wn, wnids, source)
    root_syn = _resolve_root(wn, root)
    report = BuildReport(labels=len(synsets), root=root_syn.name(), orphan_policy=orphans)
    paths_of = _Paths(root_syn)
    label_wnids = [_wnid(s) for s in synsets]
    label_set = set(label_wnids)
    all_paths = {w: paths_of(s) for w, s in zip(label_wnids, synsets)}
    root_w = paths_of.root

    # method='paths': every WordNet node on a chosen path, with its parent on that path
    # (insertion-ordered: siblings keep this order). method='incremental': the trie.
    parent_of: dict[str, str | None] = {}
    trie = _Trie(root_w)
    placed: set[str] = set()

    def deepest_in_tree(path: tuple[str, ...]) -> int:
        for k in range(len(path) - 1, -1, -1):
            if path[k] in parent_of:
                return k
        return -1

    def place(label: str, path: tuple[str, ...]) -> list[str]:
        if method == "incremental":
            trie.insert(label, path)
            placed.add(label)
            return []
        k = deepest_in_tree(path)
        for j in range(k + 1, len(path)):
            parent_of[path[j]] = path[j - 1] if j > 0 else None
        placed.update(n for n in path[k + 1:] if n in label_set)  # labels on the path are placed there
        return list(path[k + 1:])

    # Step 2: labels with a single path, in input order.
    multi: list[str] = []
    orphan_lines: list[int] = []
    for i, w in enumerate(label_wnids):
        ps = all_paths[w]
        if not ps:
            report.orphans.append(w)
            orphan_lines.append(i + 1)
        elif len(ps) == 1:
            report.single_path += 1
            place(w, ps[0])
        else:
            report.multi_path += 1
            multi.append(w)
    if report.orphans and orphans == "fail":
        listed = ", ".join(f"{w} ({paths_of.synsets[w].name()}, line {n})"
                           for w, n in zip(report.orphans, orphan_lines))
        raise WordTreeError(f"{where(source, None)}{len(report.orphans)} label(s) have no hypernym path to "
                            f"{root_syn.name()}: {listed} (use orphans='extra_root' or 'skip')")

    if method == "incremental":
        # Step 3, label by label in input order: the path that adds the fewest nodes below its
        # deepest node already in the tree (the first such path on ties).
        def added(p: tuple[str, ...]) -> int:
            return len(p) - 1 - max(i for i in range(len(p)) if p[i] in trie.parent)

        for w in multi:
            place(w, min(all_paths[w], key=added))
    else:
        _greedy(multi, all_paths, deepest_in_tree, place, placed)

    if method == "incremental":
        tree_parent: dict[str, str | None] = dict(trie.parent)
        # Siblings keep the trie's order (a branching node takes the place of the child it split off).
        rank: dict[str, int] = {}
        stack_t = [root_w]
        while stack_t:
            node = stack_t.pop()
            rank[node] = len(rank)
            stack_t.extend(reversed(trie.kids[node]))
    else:
        tree_parent = dict(parent_of)
        rank = {node: i for i, node in enumerate(tree_parent)}
    # Orphans: a top-level node of their own (after the others), or left out.
    for w in report.orphans:
        if orphans == "extra_root":
            tree_parent[w] = None
            rank[w] = len(rank)
        else:
            report.skipped.append(w)
            log.warning("%s (%s) has no hypernym path to %s: skipped", w, paths_of.synsets[w].name(),
                        root_syn.name())

    # Step 4: drop the root (unless kept) and non-label nodes with a single child.
    n_children: dict[str, int] = dict.fromkeys(tree_parent, 0)
    for p in tree_parent.values():
        if p is not None:
            n_children[p] += 1

    def kept(node: str) -> bool:
        if node == root_w and node not in label_set:
            return keep_root and n_children[node] != 1
        return node in label_set or n_children[node] != 1

    new_parent: dict[str, str | None] = {}
    for node in sorted(tree_parent, key=rank.__getitem__):  # parents rank before their children
        if kept(node):
            p = tree_parent[node]
            while p is not None and not kept(p):
                p = tree_parent[p]
            new_parent[node] = p
    report.dropped_single_child = sum(1 for n in tree_parent if not kept(n) and n != root_w)

    # Step 5: darknet numbering.
    kids: dict[str | None, list[str]] = {}
    for node, p in new_parent.items():  # in rank order, so each sibling list is ordered
        kids.setdefault(p, []).append(node)
    order: list[str] = []
    index: dict[str, int] = {}
    stack: list[str | None] = [None]
    while stack:  # iterative preorder over groups: list a node's children, then descend
        p = stack.pop()
        group = kids.get(p, [])
        for node in group:
            index[node] = len(order)
            order.append(node)
        stack.extend(reversed(group))
    parents = [-1 if new_parent[w] is None else index[new_parent[w]] for w in order]
    names = [display_name(paths_of.synsets[w]) if w in paths_of.synsets else w for w in order]
    tree = WordTree(wnids=order, names=names, parents=parents, is_label=[w in label_set for w in order],
                    source=source)
    report.nodes = tree.num_nodes
    report.seconds = time.perf_counter() - t0
    return tree, report
