"""The shard format: what ingest writes and every later stage reads.

A shard directory is ``<storage.root>/shards/<dataset>-<split>/`` (see :mod:`pipelines.layout`):
Parquet parts with :data:`SHARD_SCHEMA` and, written last, ``manifest.json`` listing them. A
directory without the manifest is an interrupted ingest, and :func:`shard_files` refuses it.

Schema (one row per image): ``image_id`` (``<dataset>/<split>/<id>``), ``dataset``, ``split``,
``kind`` (detection | classification), ``source_uri`` (credentials redacted), ``image`` (JPEG
bytes, longest side <= data.max_side; the original bytes when the image is already a small
enough RGB JPEG), ``orig_width``/``orig_height`` and ``width``/``height`` (before and after),
``boxes`` (normalized cx, cy, w, h relative to the image), ``box_nodes`` (WordTree node per box),
``box_labels`` (the original label: COCO name or wnid), ``image_node`` (the image-level node of
classification rows, -1 for detection rows), ``image_label`` (its wnid, '' otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipelines import manifest, storage
from pipelines.errors import StageError

SCHEMA_VERSION = 1
# The values of ``kind``: a detection row has boxes, a classification row an image-level label.
DETECTION = "detection"
CLASSIFICATION = "classification"
SHARD_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("kind", pa.string()),
    ("source_uri", pa.string()), ("image", pa.binary()),
    ("orig_width", pa.int32()), ("orig_height", pa.int32()), ("width", pa.int32()), ("height", pa.int32()),
    ("boxes", pa.list_(pa.list_(pa.float32(), 4))), ("box_nodes", pa.list_(pa.int32())),
    ("box_labels", pa.list_(pa.string())), ("image_node", pa.int32()), ("image_label", pa.string()),
])
# The columns each reader projects (Parquet reads only these).
TRAIN_COLUMNS = ["image_id", "kind", "image", "boxes", "box_nodes", "image_node"]
GROUND_TRUTH_COLUMNS = ["image_id", "orig_width", "orig_height", "boxes", "box_labels"]
INFERENCE_COLUMNS = ["image_id", "image", "orig_width", "orig_height"]
PREVIEW_COLUMNS = ["kind", "image"]
BOX_COLUMNS = ["boxes"]
KIND_COLUMNS = ["kind"]


def shard_files(shard_dirs: str | Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The committed part files of shard directories (refuses one without its manifest); a
    ``.parquet`` URI names one part file and is taken as it is."""
    dirs = [shard_dirs] if isinstance(shard_dirs, str) else list(shard_dirs)
    files = []
    for uri in dirs:
        if uri.endswith(".parquet"):
            files.append(uri)
            continue
        m = manifest.read_manifest(uri, storage_options)
        if m is None:
            raise StageError(f"{storage.redact_uri(uri)}: no manifest.json: not an ingest output, or an "
                             "interrupted run; run `y9k ingest` again")
        files += [storage.join(uri, f["name"]) for f in m.files]
    return files


def committed_dirs(shards_root: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Every committed shard directory directly under ``shards_root``."""
    found = storage.list_files(storage.normalize(shards_root), storage_options, suffix=manifest.MANIFEST_NAME)
    return sorted(f.rsplit("/", 1)[0] for f in found)


def write_committed(shard_dir: str, parts: Sequence[pa.Table], storage_options: Mapping[str, Any] | None = None,
                    stage: str = "ingest") -> None:
    """Write tables, as they are, as the parts of one committed shard directory: for tests and
    tools that make shards without ingest (which is the writer of real shards)."""
    import io

    import pyarrow.parquet as pq

    files = []
    for j, part in enumerate(parts):
        name = f"part-{j:05d}.parquet"
        buf = io.BytesIO()
        pq.write_table(part, buf)
        storage.write_bytes(storage.join(shard_dir, name), buf.getvalue(), storage_options)
        files.append({"name": name, "rows": part.num_rows})
    manifest.commit(shard_dir, manifest.Manifest(stage=stage, inputs_fingerprint="written", config_hash="written",
                                                 files=files), storage_options)
