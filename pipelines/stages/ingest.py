"""Ingest stage: dataset sources -> WordTree-labelled Parquet shards and a rejects table.

    result = run_ingest(cfg.data, cfg.storage, cfg.ray, tree, sources)   # sources: see sources_from_config
    print(result.summary_table())

Per source (a dataset split) the driver parses the annotations once (:mod:`pipelines.readers`)
and hands light records to Ray Data; workers read the image bytes, check and decode them,
downscale to ``data.max_side``, re-encode JPEG, check the boxes against the real image size
and write Parquet parts of about ``data.shard_mb`` MiB (a custom datasink: parts are written
by the workers, never funnelled through the driver). The driver then writes
``rejects/<dataset>-<split>/rejects.parquet`` and, last, ``shards/<dataset>-<split>/manifest.json``
(input fingerprint, tree hash, config hash, counts, files): without it the directory is an
interrupted run and readers (:func:`pipelines.shards.shard_files`) refuse it. Same inputs, tree and config: the
source is skipped.

The shard format (schema, columns, committed directories) is :mod:`pipelines.shards`.

Box rule (in pixels of the original image, W x H): a box with width or height <= 0 is
``zero or negative area``; a box crossing an image edge by more than 2% of that side is
``box outside image`` (the annotation does not belong to this image size); a box inside that
tolerance is clipped to the image, and if the clipped box is narrower or lower than 1 pixel it
is a ``degenerate box``. An image whose annotation states a size other than the decoded one is a
``size mismatch`` (its boxes cannot be trusted). Anything Pillow cannot open, verify (formats
other than JPEG) and fully decode (truncated, corrupt, not an image) is a ``corrupt image``; an
image whose header states more than ``data.max_pixels`` pixels is ``too many pixels`` (never
decoded); a local path that is not a regular file (a FIFO, which would block the reader for
ever) is ``not a regular file`` (never opened). 16-bit images are scaled to 8 bits.

A source in which the reader finds no image at all (a mistyped folder) is an error unless
``data.allow_empty`` is true.

Accounting: images in = accepted + rejected and objects in = boxes accepted + rejected, per
source; the stage checks it and the tests too. ``data.strict`` stops at the first reject with
its source, record, field and reason.
"""

from __future__ import annotations

import io
import json
import logging
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import manifest, storage
from pipelines.config import DataConfig, RayConfig, StorageConfig
from pipelines.errors import StageError
from pipelines.images import DEFAULT_MAX_PIXELS, TooManyPixels, open_checked, to_rgb
from pipelines.layout import Layout
from pipelines.readers import (
    CORRUPT,
    DEGENERATE,
    IMAGE,
    IMAGE_REJECTED,
    MALFORMED_JSON,
    MISSING,
    NOT_REGULAR,
    OBJECT,
    OUTSIDE,
    SIZE_MISMATCH,
    TOO_LARGE,
    LabelMapper,
    ReadResult,
    Source,
    reject,
)
from pipelines.shards import SCHEMA_VERSION, SHARD_SCHEMA
from wordtree_build.tree import WordTree

log = logging.getLogger(__name__)

BOX_TOLERANCE = 0.02  # fraction of the image side a box may cross before it is rejected
MIN_BOX_PX = 1.0
MAX_BLOCK_IMAGES = 256  # images per Ray Data task (see _records_dataset)

REJECT_SCHEMA = pa.schema([("source", pa.string()), ("record", pa.string()), ("field", pa.string()),
                           ("reason", pa.string()), ("detail", pa.string()), ("level", pa.string())])
# What the driver hands to the workers (pipelines.readers.image_record), typed once.
RECORD_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("kind", pa.string()),
    ("uri", pa.string()), ("stated_width", pa.int32()), ("stated_height", pa.int32()),
    ("boxes_px", pa.list_(pa.list_(pa.float64()))), ("box_nodes", pa.list_(pa.int32())),
    ("box_labels", pa.list_(pa.string())), ("box_records", pa.list_(pa.string())),
    ("image_node", pa.int32()), ("image_label", pa.string()), ("payload", pa.binary()),
    ("why", pa.string()), ("why_detail", pa.string()),
])
# Worker output: a shard row (image null when rejected) plus the record's rejects as JSON.
_OUT_SCHEMA = SHARD_SCHEMA.append(pa.field("rejects", pa.string()))


class IngestRejectError(StageError):
    """Raised in strict mode at the first rejected record."""


_STRICT = "ingest (strict):"
MALFORMED = MALFORMED_JSON  # a non-finite box coordinate (see _check_box)


def _strict_error(r: Mapping[str, Any]) -> IngestRejectError:
    return IngestRejectError(f"{_STRICT} {r['source']}: record {r['record']}, field '{r['field']}': "
                             f"{r['reason']}" + (f" ({r['detail']})" if r["detail"] else ""))


# --------------------------------------------------------------------------------------------
# Worker side: one record -> a shard row or rejects
# --------------------------------------------------------------------------------------------


def _decode(data: bytes, max_side: int, quality: int,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """Verify, fully decode, downscale and re-encode. Returns (jpeg, original size, new size)."""
    from PIL import Image

    im = open_checked(data, max_pixels)
    if im.format != "JPEG":
        # Structural check (PNG CRCs and the like). Pillow's JPEG reader checks nothing here that
        # the full decode below does not, so JPEGs (nearly all inputs) skip the second parse.
        im.verify()
        im = Image.open(io.BytesIO(data))
    w, h = im.size
    scale = min(1.0, max_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale < 1 and im.format == "JPEG":
        im.draft("RGB", size)  # DCT-domain downscale by 2/4/8 while decoding: much less work
    im.load()
    if scale == 1 and im.format == "JPEG" and im.mode == "RGB":
        return data, (w, h), (w, h)
    im = to_rgb(im)
    if im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality)
    return out.getvalue(), (w, h), size


def _check_box(box: Sequence[float], w: int, h: int) -> tuple[list[float] | None, str, str]:
    """The box rule of the module docstring: (normalized cx, cy, w, h) or (None, reason, detail)."""
    if not all(math.isfinite(v) for v in box):  # the readers refuse these; never trust a NaN
        return None, MALFORMED, f"box {list(box)} holds a number that is not finite"
    x0, y0, x1, y1 = box
    tx, ty = BOX_TOLERANCE * w, BOX_TOLERANCE * h
    if x0 < -tx or y0 < -ty or x1 > w + tx or y1 > h + ty:
        return None, OUTSIDE, f"box {[round(v, 2) for v in box]} vs image {w}x{h}"
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
        return None, DEGENERATE, f"clipped to {x1 - x0:.2f}x{y1 - y0:.2f} px"
    return [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], "", ""


def process_record(rec: Mapping[str, Any], max_side: int, quality: int,
                   storage_options: Mapping[str, Any] | None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[dict[str, Any] | None, list[dict]]:
    """Read, check and re-encode one image record: (shard row or None, reject rows)."""
    uri = rec["uri"]
    src = uri.split("#", 1)[0]

    def rejected(field_: str, reason: str, detail: str) -> tuple[None, list[dict]]:
        rows = [reject(src, rec["image_id"], field_, reason, detail, IMAGE)]
        rows += [reject(src, r, "image", IMAGE_REJECTED, f"{rec['image_id']}: {reason}", OBJECT)
                 for r in rec["box_records"]]
        return None, rows

    if rec.get("why"):
        return rejected("label" if rec["why"] != CORRUPT else "file", rec["why"], rec.get("why_detail") or "")
    data = rec.get("payload")
    if data is None:
        try:
            data = storage.read_bytes(uri, storage_options)
        except FileNotFoundError:
            return rejected("file", MISSING, "the file disappeared after listing")
        except storage.NotRegularFileError:
            return rejected("file", NOT_REGULAR, "a FIFO, socket, device or folder: not opened")
    try:
        jpeg, (w, h), (nw, nh) = _decode(data, max_side, quality, max_pixels)
    except TooManyPixels as e:
        return rejected("image", TOO_LARGE, str(e))
    except Exception as e:  # noqa: BLE001 - any failure to decode untrusted bytes means a corrupt image
        return rejected("image", CORRUPT, f"{type(e).__name__}: {e}")
    sw, sh = rec["stated_width"], rec["stated_height"]
    if sw > 0 and sh > 0 and (sw, sh) != (w, h):
        return rejected("size", SIZE_MISMATCH, f"annotation says {sw}x{sh}, image is {w}x{h}")
    boxes, nodes, labels, rejects = [], [], [], []
    for box, node, label, r in zip(rec["boxes_px"], rec["box_nodes"], rec["box_labels"], rec["box_records"]):
        norm, why, detail = _check_box(box, w, h)
        if norm is None:
            rejects.append(reject(src, r, "bbox", why, detail, OBJECT))
            continue
        boxes.append(norm)
        nodes.append(node)
        labels.append(label)
    row = {
        "image_id": rec["image_id"], "dataset": rec["dataset"], "split": rec["split"], "kind": rec["kind"],
        "source_uri": storage.redact_uri(uri), "image": jpeg, "orig_width": w, "orig_height": h,
        "width": nw, "height": nh, "boxes": boxes, "box_nodes": nodes, "box_labels": labels,
        "image_node": rec["image_node"], "image_label": rec["image_label"],
    }
    return row, rejects


def _empty_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {"image_id": rec["image_id"], "dataset": rec["dataset"], "split": rec["split"], "kind": rec["kind"],
            "source_uri": storage.redact_uri(rec["uri"]), "image": None, "orig_width": -1, "orig_height": -1,
            "width": -1, "height": -1, "boxes": [], "box_nodes": [], "box_labels": [], "image_node": -1,
            "image_label": rec["image_label"]}


class _Process:
    """The map_batches callable: records (Arrow) -> shard rows + rejects JSON (Arrow)."""

    def __init__(self, max_side: int, quality: int, storage_options: Mapping[str, Any], strict: bool,
                 max_pixels: int) -> None:
        self.max_side, self.quality, self.options, self.strict = max_side, quality, dict(storage_options), strict
        self.max_pixels = max_pixels

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for rec in batch.to_pylist():
            row, rejects = process_record(rec, self.max_side, self.quality, self.options, self.max_pixels)
            if rejects and self.strict:
                raise _strict_error(rejects[0])
            row = row or _empty_row(rec)
            row["rejects"] = json.dumps(rejects) if rejects else ""
            out.append(row)
        return pa.Table.from_pylist(out, schema=_OUT_SCHEMA)


def _expand_tar(container: dict[str, Any], storage_options: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    from pipelines.readers.imagenet import expand_tar

    return expand_tar(container, storage_options)


# --------------------------------------------------------------------------------------------
# Datasink: workers write Parquet parts of about shard_mb and return their rejects
# --------------------------------------------------------------------------------------------


def _write_parquet(table: pa.Table, sink: Any) -> None:
    # JPEG bytes do not compress; the other columns do. Nor do they repeat or have a useful
    # min / max: dictionary-encoding and statistics on them cost most of a shard's write time.
    compression = {name: ("NONE" if name == "image" else "ZSTD") for name in table.column_names}
    small = [name for name in table.column_names if name != "image"]
    rows_per_group = max(1, min(len(table), math.ceil(len(table) * (8 << 20) / max(1, table.nbytes))))
    pq.write_table(table, sink, compression=compression, row_group_size=rows_per_group,
                   use_dictionary=small, write_statistics=small)


def _make_sink(out_dir: str, storage_options: Mapping[str, Any], target_bytes: int, run_id: str):
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class ShardSink(Datasink):
        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []

        def on_write_complete(self, write_result: Any) -> None:
            # Runs on the driver: the parts written and the rejects found by every write task.
            self.results = list(write_result.write_returns)

        @property
        def min_bytes_per_write(self) -> int:
            return target_bytes

        def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
            tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
            tables = [t for t in tables if t.num_rows]
            table = pa.concat_tables(tables) if tables else _OUT_SCHEMA.empty_table()
            rejects = [r for js in table.column("rejects").to_pylist() if js for r in json.loads(js)]
            image_records = table.num_rows
            if table.column("image").null_count:  # filtering copies every image: only when needed
                table = table.filter(table.column("image").is_valid())
            accepted = table.select(SHARD_SCHEMA.names)
            if not accepted.schema.equals(SHARD_SCHEMA):
                accepted = accepted.cast(SHARD_SCHEMA)
            result: dict[str, Any] = {"files": [], "rejects": rejects, "images": accepted.num_rows,
                                      "boxes": sum(len(b) for b in accepted.column("box_nodes").to_pylist()),
                                      "image_records": image_records}
            if accepted.num_rows == 0:
                return result
            # One part per ~target bytes; a bundle is at least target_bytes, rarely much more.
            parts = max(1, round(accepted.nbytes / target_bytes))
            per = math.ceil(accepted.num_rows / parts)
            for i in range(parts):
                piece = accepted.slice(i * per, per)
                if piece.num_rows == 0:
                    continue
                uri = storage.join(out_dir, f"part-{run_id}-{ctx.task_idx:05d}-{i:02d}.parquet")
                size = storage.write_stream(uri, lambda f, piece=piece: _write_parquet(piece, f), storage_options)
                result["files"].append({"name": uri.rsplit("/", 1)[-1], "rows": piece.num_rows, "bytes": size})
            return result

    return ShardSink()


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------


@dataclass
class SourceResult:
    source: str  # dataset-split
    shards_uri: str
    rejects_uri: str
    images_in: int = 0
    images_accepted: int = 0
    images_rejected: int = 0
    objects_in: int = 0
    boxes_accepted: int = 0
    objects_rejected: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False

    def check_accounting(self) -> None:
        if (self.images_in != self.images_accepted + self.images_rejected
                or self.objects_in != self.boxes_accepted + self.objects_rejected):
            raise StageError(f"ingest {self.source}: accounting broken: images {self.images_in} != "
                             f"{self.images_accepted} + {self.images_rejected} or objects {self.objects_in} != "
                             f"{self.boxes_accepted} + {self.objects_rejected}")


@dataclass
class IngestResult:
    sources: list[SourceResult]

    def rejects_text(self) -> str:
        """Reject counts over every source, as ``reason n, reason n`` ('' when none)."""
        reasons: Counter[str] = Counter()
        for r in self.sources:
            reasons.update(r.rejects_by_reason)
        return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))

    def summary_table(self) -> str:
        head = ("source", "images in", "accepted", "rejected", "objects in", "boxes kept", "rejected", "parts", "")
        rows = [(r.source, r.images_in, r.images_accepted, r.images_rejected, r.objects_in, r.boxes_accepted,
                 r.objects_rejected, len(r.files), "skipped (up to date)" if r.skipped else "") for r in self.sources]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (head, *rows)]
        reasons = self.rejects_text()
        if reasons:
            lines.append(f"rejects by reason: {reasons}")
        return "\n".join(lines)

    def summary_line(self) -> str:
        """The table's totals in one line, for the log."""
        skipped = sum(r.skipped for r in self.sources)
        return (f"{len(self.sources)} sources ({skipped} up to date), "
                f"images {sum(r.images_accepted for r in self.sources)} accepted / "
                f"{sum(r.images_rejected for r in self.sources)} rejected, "
                f"boxes {sum(r.boxes_accepted for r in self.sources)} kept / "
                f"{sum(r.objects_rejected for r in self.sources)} rejected; "
                f"rejects by reason: {self.rejects_text() or 'none'}")


def _config_hash(data_cfg: DataConfig, tree_hash: str, source: Source) -> str:
    d = data_cfg
    return manifest.stable_hash({"schema": SCHEMA_VERSION, "tree": tree_hash, "source": [source.dataset, source.split],
                                 "max_side": d.max_side, "quality": d.jpeg_quality, "shard_mb": d.shard_mb,
                                 "unmapped": d.unmapped, "box_tolerance": BOX_TOLERANCE})


def _read(source: Source, mapper: LabelMapper, unmapped: str, opts: Mapping[str, Any]) -> ReadResult:
    if source.dataset == "coco":
        from pipelines.readers.coco import read_coco

        return read_coco(source, mapper, unmapped, opts)
    if source.dataset == "imagenet":
        from pipelines.readers.imagenet import read_imagenet

        return read_imagenet(source, mapper, unmapped, opts)
    from pipelines.readers.voc import read_voc

    return read_voc(source, mapper, unmapped, opts)


def _records_dataset(records: list[dict[str, Any]]):
    import ray

    table = pa.Table.from_pylist(records, schema=RECORD_SCHEMA)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # Blocks of at most 256 images, at least 4 per CPU, and a multiple of the CPUs in number, all
    # of one size: the last round of tasks keeps every CPU busy to the end (19 blocks for 1,200
    # images on 2 CPUs left one core idle for the last one: 5% of the run). A Ray Data task costs
    # about 10 ms beyond its work (measured on one core, Ray 2.60), 2-3 images' worth: 256 images
    # make that 1%; their output (tens of MiB) still fits a worker easily.
    blocks = math.ceil(max(math.ceil(table.num_rows / MAX_BLOCK_IMAGES), 4 * cpus) / cpus) * cpus
    per = max(1, math.ceil(table.num_rows / blocks))
    return ray.data.from_arrow([table.slice(i, per) for i in range(0, table.num_rows, per)])


def ingest_source(data_cfg: DataConfig, storage_cfg: StorageConfig, tree: WordTree, source: Source,
                  out_root: str | None = None, mapper: LabelMapper | None = None) -> SourceResult:
    """Ingest one dataset split into ``<out_root or storage.root>/shards/<dataset>-<split>/``
    (skipped when its manifest matches); see the module docstring. Ray must be running."""
    import ray

    opts = storage_cfg.options
    layout = Layout(storage.normalize(out_root or storage_cfg.root), opts)
    out_dir = layout.shard_dir(source.dataset, source.split)
    rej_dir = layout.rejects_dir(source.dataset, source.split)
    res = SourceResult(source=source.name, shards_uri=out_dir, rejects_uri=storage.join(rej_dir, "rejects.parquet"))
    fingerprint = manifest.fingerprint_uris(source.input_uris(), opts)
    chash = _config_hash(data_cfg, tree.content_hash(), source)
    if manifest.is_complete(out_dir, fingerprint, chash, opts):
        m = manifest.read_manifest(out_dir, opts)
        known = {k: v for k, v in m.counts.items() if k in SourceResult.__dataclass_fields__}
        res = SourceResult(**{**asdict(res), **known, "files": m.files, "skipped": True})
        log.info("ingest %s: up to date (%s), skipped", source.name, storage.redact_uri(out_dir))
        return res

    if mapper is None:
        from wordtree_build.wordnet import load_wordnet

        mapper = LabelMapper(tree, wordnet=load_wordnet)
    d = data_cfg
    unmapped, strict = d.unmapped, d.strict
    read = _read(source, mapper, unmapped, opts)
    if read.images_in == 0 and not read.containers and not d.allow_empty:
        raise StageError(f"ingest {source.name}: no images found in {storage.redact_uri(source.images)}"
                         + (f" (annotations {storage.redact_uri(source.annotations)})" if source.annotations else "")
                         + "; check the path, or set data.allow_empty: true if an empty source is expected")
    if strict and read.rejects:
        raise _strict_error(read.rejects[0])
    rejects = list(read.rejects)

    # Invalidate any previous output first: from here until the commit nothing is visible.
    storage.remove(manifest.manifest_uri(out_dir), opts)
    storage.remove(out_dir, opts)
    storage.remove(rej_dir, opts)
    storage.makedirs(out_dir, opts)

    run_id = uuid.uuid4().hex[:8]
    target = int(d.shard_mb * (1 << 20))
    process = _Process(d.max_side, d.jpeg_quality, opts, strict, d.max_pixels)
    writes: list[dict[str, Any]] = []
    pipelines_ = []
    if read.records:
        pipelines_.append(_records_dataset(read.records))
    if read.containers:
        conts = ray.data.from_items(read.containers, override_num_blocks=len(read.containers))
        pipelines_.append(conts.flat_map(_expand_tar, fn_kwargs={"storage_options": dict(opts)}))
    for i, ds in enumerate(pipelines_):
        ds = ds.map_batches(process, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
        # Ray Data reserves part of the CPUs for each operator by default, which leaves the
        # decode stage (all the work) one CPU of two on a small machine; let it use them all.
        ds.context.op_resource_reservation_enabled = False
        sink = _make_sink(out_dir, opts, target, f"{run_id}{i}")
        try:
            ds.write_datasink(sink)
        except Exception as e:  # a worker's strict-mode error arrives wrapped by Ray
            cause = _user_facing_cause(e)
            if cause is not None:
                raise cause from None
            raise
        writes += sink.results

    tar_images = 0
    for w in writes:
        res.files += w["files"]
        res.images_accepted += w["images"]
        res.boxes_accepted += w["boxes"]
        rejects += w["rejects"]
        tar_images += w["image_records"]
    res.images_in = read.images_in + (tar_images - len(read.records))
    if res.images_in == 0 and not d.allow_empty:  # tar files holding no member
        raise StageError(f"ingest {source.name}: no images in the tar files under "
                         f"{storage.redact_uri(source.images)}; set data.allow_empty: true if that is expected")
    res.objects_in = read.objects_in
    res.images_rejected = sum(1 for r in rejects if r["level"] == IMAGE)
    res.objects_rejected = sum(1 for r in rejects if r["level"] == OBJECT)
    res.rejects_by_reason = dict(sorted(Counter(r["reason"] for r in rejects).items()))
    res.check_accounting()

    rejects_table = pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA)
    storage.write_stream(res.rejects_uri, lambda f: _write_parquet(rejects_table, f), opts)
    counts = {k: v for k, v in asdict(res).items() if k not in ("source", "shards_uri", "rejects_uri", "files",
                                                                  "skipped")}
    manifest.commit(out_dir, manifest.Manifest(
        stage="ingest", inputs_fingerprint=fingerprint, config_hash=chash, counts=counts,
        files=res.files, extra={"source": source.name, "tree_hash": tree.content_hash(),
                                "inputs": [storage.redact_uri(u) for u in source.input_uris()],
                                "rejects": storage.redact_uri(res.rejects_uri), "schema_version": SCHEMA_VERSION}), opts)
    if rejects:
        log.info("ingest %s: %d rejects: %s", source.name, len(rejects), res.rejects_by_reason)
    return res


def _user_facing_cause(e: BaseException) -> IngestRejectError | None:
    """The strict-mode error inside Ray's wrappers, as a plain error with its one-line message.

    Ray re-raises a task's error as RayTaskError(UserCodeException) whose chain does not always
    hold the original object, but its text always carries the original message.
    """
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        line = next((ln.strip() for ln in str(cur).splitlines() if _STRICT in ln), None)
        if isinstance(cur, IngestRejectError) or line:
            text = line or str(cur)
            return IngestRejectError(text[text.index(_STRICT):] if _STRICT in text else text)
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
    return None


def run_ingest(data_cfg: DataConfig, storage_cfg: StorageConfig, ray_cfg: RayConfig, tree: WordTree,
               sources: Sequence[Source], out_root: str | None = None) -> IngestResult:
    """Ingest every source into ``<out_root or storage.root>/shards/<dataset>-<split>/``; Ray is
    started from ``ray_cfg`` when this process has none."""
    from pipelines.stages import ensure_ray
    from wordtree_build.wordnet import load_wordnet

    ensure_ray(ray_cfg)
    mapper = LabelMapper(tree, wordnet=load_wordnet)
    results = [ingest_source(data_cfg, storage_cfg, tree, s, out_root, mapper) for s in sources]
    out = IngestResult(results)
    log.info("ingest: %s", out.summary_line())  # the callers print the table itself on stdout
    return out


# --------------------------------------------------------------------------------------------
# Sources from the config
# --------------------------------------------------------------------------------------------


def coco_source(uri: str, split: str, storage_options: Mapping[str, Any] | None = None) -> Source:
    """A COCO split from its image folder (annotations found beside it) or its instances JSON."""
    uri = storage.normalize(uri)
    if uri.endswith(".json"):
        stem = uri.rsplit("/", 1)[-1][: -len(".json")].removeprefix("instances_")
        base = uri.rsplit("/", 2)[0]
        cands = [storage.join(base, stem), storage.join(base, "images", stem)]
        images = next((c for c in cands if storage.exists(c, storage_options)), cands[0])
        return Source("coco", split, images=images, annotations=uri)
    name, parent = uri.rsplit("/", 1)[-1], uri.rsplit("/", 1)[0]
    cands = [storage.join(parent, "annotations", f"instances_{name}.json"),
             storage.join(parent.rsplit("/", 1)[0], "annotations", f"instances_{name}.json")]
    ann = next((c for c in cands if storage.exists(c, storage_options)), cands[0])
    return Source("coco", split, images=uri, annotations=ann)


def det_source(uri: str, split: str = "val", storage_options: Mapping[str, Any] | None = None,
               dataset: str = "imagenet_det") -> Source:
    """ImageNet DET (``Annotations/DET/<split>`` + ``Data/DET/<split>``), or a plain ``Annotations/``."""
    uri = storage.normalize(uri)
    nested = storage.join(uri, "Annotations", "DET", split)
    if storage.exists(nested, storage_options):
        return Source(dataset, split, images=storage.join(uri, "Data", "DET", split), annotations=nested)
    images = next((storage.join(uri, d) for d in ("Data", "JPEGImages", "Images")
                   if storage.exists(storage.join(uri, d), storage_options)), storage.join(uri, "Data"))
    return Source(dataset, split, images=images, annotations=storage.join(uri, "Annotations"))


def voc_source(uri: str, split: str = "trainval", storage_options: Mapping[str, Any] | None = None) -> Source:
    """A PASCAL VOC year folder (``Annotations``, ``JPEGImages``, ``ImageSets/Main/<split>.txt``)."""
    uri = storage.normalize(uri)
    lst = storage.join(uri, "ImageSets", "Main", f"{split}.txt")
    return Source("voc", split, images=storage.join(uri, "JPEGImages"), annotations=storage.join(uri, "Annotations"),
                  image_list=lst if storage.exists(lst, storage_options) else None)


def sources_from_config(data_cfg: DataConfig, storage_options: Mapping[str, Any] | None = None) -> list[Source]:
    """The sources named in ``data.*`` (unset ones are left out)."""
    d, opts = data_cfg, storage_options
    out = []
    if d.coco_train:
        out.append(coco_source(d.coco_train, "train", opts))
    if d.coco_val:
        out.append(coco_source(d.coco_val, "val", opts))
    if d.imagenet_train:
        out.append(Source("imagenet", "train", images=storage.normalize(d.imagenet_train)))
    if d.det_val:
        out.append(det_source(d.det_val, "val", opts))
    if d.voc:
        out.append(voc_source(d.voc, "trainval", opts))
    return out

