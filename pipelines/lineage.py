"""Dataset lineage: the shard directories a run read, logged as MLflow dataset inputs.

One MLflow dataset per shard directory (``shards/coco-train``, ...): its name, its URI with
credentials removed, digest = the ingest manifest's input fingerprint (the same value that
changes when the data changes and that the registry's ``data.ingest.fingerprint`` tag comes
from), row count (profile) and the shard schema, with the context ``training`` or
``evaluation``. The MLflow UI then lists them under the run's "Datasets used", and
``mlflow.search_runs(filter_string="dataset.name = 'coco-train'")`` finds the runs that read
a dataset.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines import manifest, storage

TRAINING, EVALUATION = "training", "evaluation"


def _colspec_type(t: Any) -> Any:
    """An MLflow column type for a shard column's Arrow type (lists become MLflow arrays)."""
    import pyarrow as pa
    from mlflow.types.schema import Array, DataType

    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return Array(_colspec_type(t.value_type))
    for check, dtype in ((pa.types.is_string, DataType.string), (pa.types.is_binary, DataType.binary),
                         (pa.types.is_int32, DataType.integer), (pa.types.is_int64, DataType.long),
                         (pa.types.is_float32, DataType.float), (pa.types.is_float64, DataType.double),
                         (pa.types.is_boolean, DataType.boolean)):
        if check(t):
            return dtype
    raise TypeError(f"no MLflow type for shard column type {t}")


def mlflow_schema(arrow_schema: Any) -> Any:
    from mlflow.types.schema import ColSpec, Schema

    return Schema([ColSpec(_colspec_type(f.type), f.name) for f in arrow_schema])


def shard_dataset(shards_uri: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The MLflow dataset of one committed shard directory (refuses one without a manifest)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from pipelines.errors import StageError
    from pipelines.shards import SHARD_SCHEMA

    m = manifest.read_manifest(shards_uri, storage_options)
    if m is None:
        raise StageError(f"{storage.redact_uri(shards_uri)}: no manifest.json: not a committed ingest output")
    uri = storage.redact_uri(shards_uri)
    try:
        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(uri)
    except Exception:  # a scheme MLflow has no source type for (gs://, ...): keep the URI as text
        source = HTTPDatasetSource(uri)
    # Rows: the manifest's part files say how many each holds (ingest also counts what it accepted).
    rows = sum(int(f.get("rows", 0)) for f in m.files) if m.files else int(m.counts.get("images_accepted", 0))

    class ShardDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return {"num_rows": rows}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return ShardDataset(source, name=shards_uri.rstrip("/").rsplit("/", 1)[-1], digest=m.inputs_fingerprint,
                        schema=mlflow_schema(SHARD_SCHEMA))


def shard_dirs_of(shards: Sequence[str]) -> list[str]:
    """Shard directories of shard directories or part files, in order, once each."""
    dirs = [s.rsplit("/", 1)[0] if s.endswith(".parquet") else s.rstrip("/") for s in shards]
    return list(dict.fromkeys(dirs))


def log_shard_inputs(tracking_uri: str, run_id: str, shards: Sequence[str], context: str,
                     storage_options: Mapping[str, Any] | None = None) -> list[Any]:
    """Log each shard directory (or the directory of each part file) as a dataset input of
    ``run_id``; logging the same dataset again in the same context adds nothing. Returns the datasets."""
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    datasets = [shard_dataset(s, storage_options) for s in shard_dirs_of(shards)]
    inputs = [DatasetInput(d._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]) for d in datasets]
    if inputs:
        MlflowClient(tracking_uri).log_inputs(run_id, datasets=inputs)
    return datasets
