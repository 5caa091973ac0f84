"""ImageNet classification -> image records (folder layout) or tar containers (full release).

Two layouts, told apart by what the root holds:

- ``<root>/<wnid>/<any name>``: one folder per class (ILSVRC-2012 train, the sample data).
  Every file is an image record labelled by its folder; the folder is listed once.
- ``<root>/<wnid>.tar``: one tar file per class (the fall 2011 full release that a top-9000
  run reads). Tars are expanded by the workers, one task per tar, streaming its members, so
  the driver never downloads them; every member is an image record.

A folder or tar name that is not a wnid, or a class without a WordTree node, rejects each of
its images (``unknown wnid`` / ``unmapped label``; with ``data.unmapped: drop_label`` the images
are kept with ``image_node = -1``). Image ids are ``imagenet/<split>/<file stem>``; a stem seen
twice is a ``duplicate id``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Mapping
from typing import Any

from pipelines import storage
from pipelines.readers import (
    CORRUPT,
    DUPLICATE,
    UNKNOWN_WNID,
    LabelMapper,
    ReadResult,
    Source,
    image_record,
    reject,
)
from pipelines.shards import CLASSIFICATION


def read_imagenet(source: Source, mapper: LabelMapper, unmapped: str = "reject",
                  storage_options: Mapping[str, Any] | None = None) -> ReadResult:
    res = ReadResult()
    root = storage.normalize(source.images).rstrip("/")
    seen: set[str] = set()
    for uri in storage.list_files(source.images, storage_options):
        rel = uri[len(root) + 1:] if uri.startswith(root + "/") else uri.rsplit("/", 2)[-2] + "/" + uri.rsplit("/", 1)[-1]
        parts = rel.split("/")
        if len(parts) == 1 and parts[0].endswith(".tar"):
            wnid = parts[0][:-4]
            node, why = mapper.wnid(wnid)
            res.containers.append({"uri": uri, "wnid": wnid, "node": node, "why": why or "",
                                   "split": source.split, "keep": why is None or unmapped == "drop_label"})
            continue
        res.images_in += 1
        wnid, name = parts[-2] if len(parts) >= 2 else "", parts[-1]
        stem = name.rsplit(".", 1)[0]
        image_id = f"imagenet/{source.split}/{stem}"
        if len(parts) != 2:
            # A file outside the <wnid>/<file> layout has no label at all.
            res.rejects.append(reject(uri, rel, "folder", UNKNOWN_WNID, "expected <root>/<wnid>/<file>"))
            continue
        node, why = mapper.wnid(wnid)
        if why is not None and unmapped == "reject":
            res.rejects.append(reject(uri, rel, "folder", why, f"class folder {wnid!r}"))
            continue
        if image_id in seen:
            res.rejects.append(reject(uri, rel, "file name", DUPLICATE, f"image id {image_id} already read"))
            continue
        seen.add(image_id)
        res.records.append(image_record(image_id=image_id, dataset="imagenet", split=source.split,
                                        kind=CLASSIFICATION, uri=uri, image_node=node, image_label=wnid))
    return res


def expand_tar(container: Mapping[str, Any], storage_options: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Stream one class tar: a record with its bytes for every member (run by a Ray worker).

    Members of a class that cannot be used carry the reason in ``why`` (the worker rejects them);
    a tar that cannot be read at all becomes one rejected record. Member stems include the wnid
    (``n01440764_10026``), so ids are unique across tars without a global check.
    """
    wnid, uri, split = container["wnid"], container["uri"], container["split"]
    why = "" if container["keep"] else container["why"]
    try:
        with storage.open_uri(uri, "rb", storage_options) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                stem = member.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                yield image_record(image_id=f"imagenet/{split}/{stem}", dataset="imagenet", split=split,
                                   kind=CLASSIFICATION, uri=f"{uri}#{member.name}", image_node=container["node"],
                                   image_label=wnid, payload=None if why else data, why=why)
    except (tarfile.TarError, OSError, EOFError) as e:
        yield image_record(image_id=f"imagenet/{split}/{wnid}.tar", dataset="imagenet", split=split,
                           kind=CLASSIFICATION, uri=uri, image_label=wnid, why=CORRUPT, why_detail=str(e))
