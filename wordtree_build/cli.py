"""`y9k wordtree build|show|stats`: build a WordTree, show a synset's path, summarize a tree."""

from __future__ import annotations

import argparse
import json

LABEL_SETS = ("imagenet1k", "9k")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "wordtree", help="build and inspect the WordTree (WordNet label hierarchy)",
        description="Build the YOLO9000 WordTree from WordNet 3.0 (paper's construction), show a synset's "
        "path to the root, or summarize a tree file.")
    sub = p.add_subparsers(dest="wordtree_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="build a tree from a label list",
                       description="Build a WordTree and write tree.parquet plus darknet <stem>.tree/.names/.labels.")
    b.add_argument("--labels", required=True,
                   help="a label list file (first field of each line is a wnid: 9k.labels, LOC_synset_mapping.txt, "
                        "a DET class table) or a bundled set: imagenet1k, 9k")
    b.add_argument("--out", required=True, help="output directory URI (local path, s3://, ...)")
    b.add_argument("--root", default="physical_entity.n.01", help="root synset (default physical_entity.n.01)")
    b.add_argument("--orphans", choices=("extra_root", "skip", "fail"), default="extra_root",
                   help="labels with no path to the root: top-level node of their own, skip, or fail")
    b.add_argument("--method", choices=("paths", "incremental"), default="paths",
                   help="paths: the paper's construction (ImageNet-1k -> 1368 nodes); incremental: grown label by "
                        "label as darknet's 9k.tree was (95%% of its parents reproduced from 9k.labels)")
    b.add_argument("--stem", default="tree", help="file name stem of the darknet files (default tree)")
    b.set_defaults(func=_build)

    s = sub.add_parser("show", help="a synset's hypernym path(s) to the root",
                       description="Print a synset's WordNet hypernym paths from the root, e.g. n02085620.")
    s.add_argument("wnid", help="wnid (n02085620) or synset name (chihuahua.n.03)")
    s.add_argument("--root", default="physical_entity.n.01")
    s.set_defaults(func=_show)

    t = sub.add_parser("stats", help="summarize a tree (Parquet, or darknet .tree)",
                       description="Nodes, labels, groups, leaves, depth and content hash of a tree file.")
    t.add_argument("uri", help="tree.parquet, a directory holding it, or a darknet .tree file")
    t.set_defaults(func=_stats)


def _label_list(spec: str) -> tuple[list[str], str]:
    from wordtree_build import labelmaps
    from wordtree_build.files import read_labels

    if spec == "imagenet1k":
        return labelmaps.imagenet1k_wnids(), "imagenet1k"
    if spec == "9k":
        return labelmaps.nine_k_wnids(), "9k.labels"
    return read_labels(spec), spec


def _build(args: argparse.Namespace) -> int:
    from wordtree_build.build import build_wordtree

    wnids, source = _label_list(args.labels)
    tree, report = build_wordtree(wnids, root=args.root, orphans=args.orphans, method=args.method, source=source)
    out = args.out.rstrip("/")
    tree.to_parquet(f"{out}/tree.parquet")
    tree.to_darknet(out, args.stem)
    print(json.dumps({"out": out, **tree.stats(), "report": report.as_dict()}, indent=2))
    return 0


def _show(args: argparse.Namespace) -> int:
    from wordtree_build.build import _resolve_root
    from wordtree_build.errors import WordTreeError
    from wordtree_build.wordnet import load_wordnet, synset_to_wnid, wnid_to_synset

    wn = load_wordnet()
    try:
        s = wnid_to_synset(wn, args.wnid) if args.wnid[1:].isdigit() else wn.synset(args.wnid)
    except Exception as e:
        raise WordTreeError(f"{args.wnid}: not a WordNet noun synset ({e})") from None
    root = _resolve_root(wn, args.root)
    paths = [p[p.index(root):] for p in s.hypernym_paths() if root in p]
    if not paths:
        print(f"{synset_to_wnid(s)} {s.name()}: no path to {root.name()} (an orphan)")
        return 0
    for i, p in enumerate(paths):
        print(f"path {i + 1}: " + " > ".join(f"{x.name()} ({synset_to_wnid(x)})" for x in p))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from wordtree_build.tree import WordTree

    uri = args.uri.rstrip("/")
    if uri.endswith(".tree"):
        tree = WordTree.from_darknet(uri)
    else:
        tree = WordTree.from_parquet(uri if uri.endswith(".parquet") else f"{uri}/tree.parquet")
    print(json.dumps(tree.stats(), indent=2))
    return 0
