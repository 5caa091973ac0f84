"""Where every stage's output lives under ``storage.root``, and which dataset split plays which role.

    layout = Layout.of(cfg.storage)
    layout.tree                         # <root>/wordtree/tree.parquet
    layout.splits_for("detect")         # committed shard dirs of coco-train and voc-trainval

Every command, the job (:mod:`pipelines.job`) and the sample data read this module, so
``y9k anchors`` and ``y9k run`` fit the anchors on the same boxes and ``y9k train`` trains on
the same shards as the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines import storage
from pipelines.config import Config, StorageConfig
from pipelines.shards import committed_dirs

# Roles a shard directory (``<dataset>-<split>``) plays downstream of ingest. As detectron2's
# builtin split table: one row per split, read by every stage that chooses shards.
DETECT = "detect"  # detection training (train.mode detect or joint)
CLASSIFY = "classify"  # classification training (train.mode classify or joint)
ANCHORS = "anchors"  # the boxes IoU k-means clusters
EVALUATE = "evaluate"  # held-out boxes for mAP
SPLIT_ROLES: dict[str, frozenset[str]] = {
    "coco-train": frozenset({DETECT, ANCHORS}),
    "voc-trainval": frozenset({DETECT, ANCHORS}),
    "imagenet-train": frozenset({CLASSIFY}),
    "imagenet_det-val": frozenset({EVALUATE}),
    "coco-val": frozenset(),  # ingested for inspection; no stage reads it
}
# Which roles feed training in each train.mode.
TRAIN_ROLES = {"classify": (CLASSIFY,), "detect": (DETECT,), "joint": (DETECT, CLASSIFY)}

# Files a stage writes into its directory that later stages (and commands) read.
TREE_FILE = "tree.parquet"  # the WordTree, in <root>/wordtree
ANCHORS_FILE = "anchors.json"  # the anchors and their curve, in <root>/anchors
# The evaluation class table (wnid, det_id, name, ...): the wordtree stage writes one, and one
# beside a DET source (at its root) names that source's classes.
DET_CLASSES_FILE = "det_classes.tsv"

# Where `pipelines.sample_data.generate` puts each dataset (relative to its output), by the
# data.* key that points at it.
SAMPLE_DATA = {"coco_train": "coco/images/train", "coco_val": "coco/images/val",
               "imagenet_train": "imagenet/train", "det_val": "imagenet_det"}


def split_names(*roles: str) -> list[str]:
    """The split names playing any of ``roles``, in table order."""
    return [name for name, have in SPLIT_ROLES.items() if have & set(roles)]


@dataclass(frozen=True)
class Layout:
    """The output locations under one storage root."""

    root: str
    storage_options: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, storage_cfg: StorageConfig) -> Layout:
        """The layout under ``storage.root`` (its options reach every listing)."""
        return cls(storage.normalize(storage_cfg.root), storage_cfg.options)

    def uri(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def sample(self) -> str:
        """The generated sample datasets (when no data.* source is configured)."""
        return self.uri("sample")

    @property
    def wordtree(self) -> str:
        return self.uri("wordtree")

    @property
    def tree(self) -> str:
        return self.uri("wordtree", TREE_FILE)

    @property
    def shards(self) -> str:
        return self.uri("shards")

    def shard_dir(self, dataset: str, split: str) -> str:
        return self.uri("shards", f"{dataset}-{split}")

    def rejects_dir(self, dataset: str, split: str) -> str:
        return self.uri("rejects", f"{dataset}-{split}")

    @property
    def anchors(self) -> str:
        return self.uri("anchors")

    @property
    def anchors_json(self) -> str:
        return self.uri("anchors", ANCHORS_FILE)

    def train_dir(self, name: str) -> str:
        """A training run directory: ``<root>/train/<mode>`` for `y9k train`, ``run-<hash>`` for the job."""
        return self.uri("train", name)

    def eval_dir(self, name: str) -> str:
        return self.uri("eval", name)

    def ablation(self, *parts: str) -> str:
        """`y9k ablation` runs and their table: ``<root>/ablation/<steps>/...``."""
        return self.uri("ablation", *parts)

    def record(self, stage: str) -> str:
        """The job's record of a stage (its manifest.json)."""
        return self.uri("_pipeline", stage)

    def splits_for(self, *roles: str) -> list[str]:
        """The committed shard directories playing any of ``roles`` (see :data:`SPLIT_ROLES`)."""
        wanted = set(split_names(*roles))
        return [d for d in committed_dirs(self.shards, self.storage_options) if d.rsplit("/", 1)[-1] in wanted]

    def train_splits(self, mode: str) -> list[str]:
        """The committed shard directories training reads in ``mode`` (classify, detect, joint)."""
        return self.splits_for(*TRAIN_ROLES[mode])


def uses_sample_data(cfg: Config) -> bool:
    """No data.* source is configured and sample_data.enabled: the pipeline generates its data."""
    d = cfg.data
    return cfg.sample_data.enabled and not any((d.coco_train, d.coco_val, d.imagenet_train, d.det_val, d.voc))


def point_config_at_sample_data(cfg: Config) -> None:
    """Fill the data.* sources with the generated sample datasets under ``<root>/sample``."""
    sample = Layout.of(cfg.storage).sample
    for key, rel in SAMPLE_DATA.items():
        setattr(cfg.data, key, storage.join(sample, rel))
