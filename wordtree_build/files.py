"""WordTree files: darknet's ``.tree`` / ``.names`` / ``.labels`` / ``.map`` and the project's Parquet.

- ``.tree``: line n is node n - 1, ``<wnid> <parent index>`` (-1 for a root).
- ``.names`` / ``.labels``: one display name / one wnid per line, in node order.
- ``.map``: line k is the node index of dataset class k (``coco9k.map``, ``inet9k.map``).
- Parquet: columns node, wnid, name, parent, group, depth (int32 / string / bool is_label),
  one row per node in order.

Every path is a URI (local path or any fsspec URL). Writers reproduce darknet's bytes exactly
(``\\n`` after every line), so reading and writing ``9k.tree`` gives the same file. Malformed
input raises :class:`WordTreeError` naming the file and line.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec

from wordtree_build.errors import WordTreeError
from wordtree_build.tree import WordTree

PARQUET_COLUMNS = ("node", "wnid", "name", "parent", "group", "depth", "is_label")


def _read_text(uri: str, storage_options: Mapping[str, Any] | None) -> str:
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise WordTreeError(f"{uri}: file not found") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise WordTreeError(f"{uri} line {line}: not UTF-8 text") from None


def _write_bytes(uri: str, data: bytes, storage_options: Mapping[str, Any] | None) -> None:
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def _lines(text: str) -> list[str]:
    # darknet writes "\n" after every line; a missing final newline is accepted too.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def read_lines(uri: str, storage_options: Mapping[str, Any] | None = None, *, what: str = "entry") -> list[str]:
    """Non-empty stripped lines of a ``.names`` / ``.labels`` / list file; blank lines are errors."""
    out = []
    for i, ln in enumerate(_lines(_read_text(uri, storage_options))):
        if not ln.strip():
            raise WordTreeError(f"{uri} line {i + 1}: empty line where a {what} was expected")
        out.append(ln.strip())
    return out


def read_labels(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """A label list: the first whitespace-separated field of each line is a wnid.

    Reads ``9k.labels`` as well as ``LOC_synset_mapping.txt`` (``wnid words``) and the TSV class
    tables (``wnid<TAB>det_id<TAB>name``). Duplicates raise naming both lines.
    """
    out: list[str] = []
    first: dict[str, int] = {}
    for i, ln in enumerate(read_lines(uri, storage_options, what="wnid")):
        w = ln.split()[0]
        if w in first:
            raise WordTreeError(f"{uri} line {i + 1}: duplicate label {w} (first on line {first[w] + 1})")
        first[w] = i
        out.append(w)
    return out


def read_tree_file(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[list[str], list[int]]:
    """(wnids, parents) of a darknet ``.tree``, checked as a darknet-ordered forest."""
    from wordtree_build.tree import check_structure

    wnids, parents = [], []
    for i, ln in enumerate(_lines(_read_text(uri, storage_options))):
        parts = ln.split()
        if len(parts) != 2:
            raise WordTreeError(f"{uri} line {i + 1}: expected '<wnid> <parent index>', got {ln!r}")
        try:
            parents.append(int(parts[1]))
        except ValueError:
            raise WordTreeError(f"{uri} line {i + 1}: parent index {parts[1]!r} is not an integer") from None
        wnids.append(parts[0])
    if not wnids:
        raise WordTreeError(f"{uri}: empty tree file")
    check_structure(parents, uri)
    return wnids, parents


def read_darknet(tree_uri: str, names_uri: str | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> WordTree:
    """A WordTree from a ``.tree`` (and optionally its ``.names``); every node counts as a label."""
    wnids, parents = read_tree_file(tree_uri, storage_options)
    if names_uri:
        names = [ln.strip() for ln in _lines(_read_text(names_uri, storage_options))]
        if len(names) != len(wnids):
            raise WordTreeError(f"{names_uri}: {len(names)} names for the {len(wnids)} nodes of {tree_uri}")
    else:
        names = list(wnids)
    return WordTree(wnids=wnids, names=names, parents=parents, is_label=[True] * len(wnids), source=tree_uri)


def tree_text(tree: WordTree) -> str:
    return "".join(f"{w} {p}\n" for w, p in zip(tree.wnids, tree.parents))


def write_darknet(tree: WordTree, dir_uri: str, stem: str,
                  storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write ``<stem>.tree``, ``<stem>.names``, ``<stem>.labels`` under `dir_uri`; returns their URIs."""
    base = dir_uri.rstrip("/")
    out = {
        "tree": f"{base}/{stem}.tree",
        "names": f"{base}/{stem}.names",
        "labels": f"{base}/{stem}.labels",
    }
    _write_bytes(out["tree"], tree_text(tree).encode(), storage_options)
    _write_bytes(out["names"], "".join(f"{n}\n" for n in tree.names).encode(), storage_options)
    _write_bytes(out["labels"], "".join(f"{w}\n" for w in tree.wnids).encode(), storage_options)
    return out


def read_map(uri: str, num_nodes: int | None = None, storage_options: Mapping[str, Any] | None = None) -> list[int]:
    """A darknet ``.map``: node index per class line; checked against `num_nodes` when given."""
    out = []
    for i, ln in enumerate(read_lines(uri, storage_options, what="node index")):
        try:
            v = int(ln)
        except ValueError:
            raise WordTreeError(f"{uri} line {i + 1}: node index {ln!r} is not an integer") from None
        if v < 0 or (num_nodes is not None and v >= num_nodes):
            raise WordTreeError(f"{uri} line {i + 1}: node index {v} out of range (tree has {num_nodes} nodes)")
        out.append(v)
    return out


def write_map(nodes: Sequence[int], uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    _write_bytes(uri, "".join(f"{int(v)}\n" for v in nodes).encode(), storage_options)


def write_parquet(tree: WordTree, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "node": pa.array(range(tree.num_nodes), pa.int32()),
        "wnid": pa.array(tree.wnids, pa.string()),
        "name": pa.array(tree.names, pa.string()),
        "parent": pa.array(tree.parents, pa.int32()),
        "group": pa.array(tree.group_of, pa.int32()),
        "depth": pa.array(tree.depth, pa.int32()),
        "is_label": pa.array(tree.is_label, pa.bool_()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    _write_bytes(uri, buf.getvalue(), storage_options)


def read_parquet(uri: str, storage_options: Mapping[str, Any] | None = None) -> WordTree:
    """Read the Parquet form; node, group and depth must agree with the structure."""
    import pyarrow.parquet as pq

    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            table = pq.read_table(f)
    except FileNotFoundError:
        raise WordTreeError(f"{uri}: file not found") from None
    except Exception as e:  # pyarrow's own errors say little about which file
        raise WordTreeError(f"{uri}: not a readable Parquet file ({e})") from None
    missing = [c for c in PARQUET_COLUMNS if c not in table.column_names]
    if missing:
        raise WordTreeError(f"{uri}: missing column(s) {', '.join(missing)}")
    cols = {c: table.column(c).to_pylist() for c in PARQUET_COLUMNS}
    for c in PARQUET_COLUMNS:
        for i, v in enumerate(cols[c]):
            if v is None:
                raise WordTreeError(f"{uri} row {i}: field {c} is null")
    for i, v in enumerate(cols["node"]):
        if v != i:
            raise WordTreeError(f"{uri} row {i}: field node is {v}, expected {i} (rows must be in node order)")
    tree = WordTree(wnids=cols["wnid"], names=cols["name"], parents=cols["parent"], is_label=cols["is_label"],
                    source=uri)
    for field_name, derived in (("group", tree.group_of), ("depth", tree.depth)):
        for i, (v, d) in enumerate(zip(cols[field_name], derived)):
            if v != d:
                raise WordTreeError(f"{uri} row {i}: field {field_name} is {v}, but the parents give {d}")
    return tree
