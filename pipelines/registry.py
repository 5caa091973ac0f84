"""The MLflow model registry: a pyfunc detector, versions with provenance, and guarded aliases.

**The pyfunc model.** :class:`YoloPyfunc` wraps a darknet-layout network (any
``yolo_core`` model, built from ``create_model`` or a darknet cfg) with its artifacts:

- ``model.cfg`` (the network as darknet cfg text) and ``model.pt`` (its state_dict): any
  ``DarknetNet`` is rebuilt exactly from these two files;
- ``tree.json``: ``wnids``, ``names`` and ``parents`` of the output classes (``parents`` is null
  for a flat softmax model); ``anchors.json``; ``config.yaml`` (the pipeline config, secrets
  redacted); ``settings.json`` (input size and default thresholds); ``model.onnx`` when
  onnxruntime is installed at logging time (``yolo_core.inference.export_onnx``: the folded
  network, dynamic batch and size), which the ONNX Runtime backend then loads instead of
  exporting again.

Input: a DataFrame with an ``image`` column (encoded bytes) or a ``path`` column (local path or
URI). Output: one row per detection with ``image`` (input row), ``wnid``, ``name``, ``label``
(the hierarchical label, 'Norfolk terrier < terrier < dog'), ``score`` and ``x1 y1 x2 y2`` in
pixels. ``thresh``, ``hier_thresh`` and ``nms`` can be passed as inference params. The model carries
its signature and a one-image input example (``serving_input_example.json``), so ``mlflow models
serve`` validates requests and the UI shows a working "Predict" snippet.

**Versions and aliases.** Every registered version carries tags (data manifest fingerprints,
tree hash, git commit, ``metric.<name>`` values) and a description, and gets the alias
``candidate``. ``champion`` moves to it only when its ``metric.<promote_metric>`` tag beats the
champion's by more than ``promote_margin``; each move is recorded on the registered model:
the versions in tag ``champion_history`` (what ``rollback`` walks back) and one tag
``champion_move.NNNN`` per move (version, previous champion, when, who, what triggered it and
why), which ``y9k registry history`` shows and pipelines/versions.py turns into champion periods.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pipelines import redaction, storage
from pipelines.errors import PipelineError

CANDIDATE = "candidate"
CHAMPION = "champion"
HISTORY_TAG = "champion_history"
# One registered-model tag per champion move: champion_move.0001, ... (JSON, see record_move).
MOVE_TAG_PREFIX = "champion_move."
METRIC_PREFIX = "metric."
OUTPUT_COLUMNS = ["image", "wnid", "name", "label", "score", "x1", "y1", "x2", "y2"]
_PKG_ROOT = Path(__file__).resolve().parent.parent


class RegistryError(PipelineError):
    """A registry action that cannot be done; names the model, version and alias."""


# --------------------------------------------------------------------------------------------
# The pyfunc model
# --------------------------------------------------------------------------------------------


def write_bundle(out_dir: str | Path, model: Any, *, wnids: Sequence[str], names: Sequence[str],
                 parents: Sequence[int] | None, config_yaml: str = "", input_size: int = 416,
                 thresh: float = 0.24, hier_thresh: float = 0.5, nms: float = 0.45) -> dict[str, str]:
    """Write the pyfunc artifacts of ``model`` into ``out_dir``; returns {artifact name: path}."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(wnids) != model.num_classes or len(names) != model.num_classes:
        raise RegistryError(f"model has {model.num_classes} classes but {len(wnids)} wnids / {len(names)} names were given")
    files = {
        "cfg": out / "model.cfg", "weights": out / "model.pt", "tree": out / "tree.json",
        "anchors": out / "anchors.json", "config": out / "config.yaml", "settings": out / "settings.json",
    }
    files["cfg"].write_text(model.cfg_text())
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, files["weights"])
    files["tree"].write_text(json.dumps({"wnids": list(wnids), "names": list(names),
                                         "parents": None if parents is None else [int(p) for p in parents]}))
    anchors = model.anchors  # None for YOLOv1 (no anchors)
    files["anchors"].write_text(json.dumps(anchors.cpu().tolist() if anchors is not None else None))
    files["config"].write_text(config_yaml)
    files["settings"].write_text(json.dumps({"input_size": input_size, "thresh": thresh,
                                             "hier_thresh": hier_thresh, "nms": nms}))
    from yolo_core.inference import export_onnx, onnxruntime_available

    if onnxruntime_available():
        files["onnx"] = out / "model.onnx"
        export_onnx(model.cpu(), files["onnx"], input_size)
    return {k: str(v) for k, v in files.items()}


def load_bundle(artifacts: Mapping[str, str], device: str | None = None, backend: str = "auto"):
    """(Detector, tree labels dict) from the artifacts written by :func:`write_bundle`."""
    import torch

    from pipelines.inference import Detector
    from yolo_core.darknet_cfg import DarknetNet, parse_cfg_text
    from yolo_core.tree import Tree

    net, layers = parse_cfg_text(Path(artifacts["cfg"]).read_text(), source=artifacts["cfg"])
    model = DarknetNet(net, layers, source=artifacts["cfg"])
    model.load_state_dict(torch.load(artifacts["weights"], map_location="cpu", weights_only=True))
    labels = json.loads(Path(artifacts["tree"]).read_text())
    settings = json.loads(Path(artifacts["settings"]).read_text())
    tree = Tree(labels["parents"], labels["wnids"], labels["names"]) if labels["parents"] is not None else None
    return Detector(model, tree, device=device, backend=backend, onnx_model=artifacts.get("onnx"),
                    **settings), labels


class YoloPyfunc(mlflow.pyfunc.PythonModel):
    """Images (bytes or paths) in, a table of detections out."""

    def load_context(self, context: Any) -> None:
        from pipelines.inference import hierarchical_label

        self.detector, labels = load_bundle(context.artifacts)
        self.onnx_file = context.artifacts.get("onnx")
        self.wnids, self.names = labels["wnids"], labels["names"]
        parents = labels["parents"]
        self.labels = [hierarchical_label(k, self.names, parents) if parents is not None else self.names[k]
                       for k in range(len(self.names))]
        self.defaults = (self.detector.thresh, self.detector.hier_thresh, self.detector.nms)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        d = self.detector
        d.thresh = float(params.get("thresh", self.defaults[0]))
        d.hier_thresh = float(params.get("hier_thresh", self.defaults[1]))
        d.nms = float(params.get("nms", self.defaults[2]))
        records = model_input.to_dict("records")
        rows = []
        batch = 8  # decode and run a few images at a time: memory stays flat for long inputs
        for start in range(0, len(records), batch):
            images = [self._image(start + k, r, d.decode_size) for k, r in enumerate(records[start:start + batch])]
            for j, det in enumerate(d(images)):
                for box, score, cls in zip(det.boxes, det.scores, det.classes):
                    rows.append((start + j, self.wnids[cls], self.names[cls], self.labels[cls], float(score), *map(float, box)))
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS).astype({"image": "int64"})

    @staticmethod
    def _image(i: int, row: Mapping[str, Any], size: int | None = None) -> Any:
        from pipelines.inference import open_image

        data, path = row.get("image"), row.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            return open_image(bytes(data), f"input row {i}, field 'image'", size)
        if isinstance(path, str) and path:
            try:
                blob = storage.read_bytes(path)
            except (OSError, ValueError) as e:
                raise RegistryError(f"input row {i}, field 'path': cannot read {storage.redact_uri(path)!r} ({e})") from None
            return open_image(blob, f"input row {i}, field 'path' ({storage.redact_uri(path)})", size)
        raise RegistryError(f"input row {i}: needs non-empty bytes in 'image' or a path in 'path'")


def model_signature(thresh: float = 0.24, hier_thresh: float = 0.5, nms: float = 0.45) -> Any:
    """Inputs (image bytes or path), the detection table, and the thresholds as params (MLflow fills
    in the defaults, so they are the model's own settings)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)])
    outputs = Schema([ColSpec("long", "image"), ColSpec("string", "wnid"), ColSpec("string", "name"),
                      ColSpec("string", "label"), ColSpec("double", "score"), ColSpec("double", "x1"),
                      ColSpec("double", "y1"), ColSpec("double", "x2"), ColSpec("double", "y2")])
    params = ParamSchema([ParamSpec("thresh", "double", thresh), ParamSpec("hier_thresh", "double", hier_thresh),
                          ParamSpec("nms", "double", nms)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example(size: int = 64) -> pd.DataFrame:
    """One small encoded image: MLflow stores it with the model (``input_example.json`` and
    ``serving_input_example.json``, base64), checks the model serves it when logging, and the UI's
    "Predict" snippet uses it."""
    import io

    from PIL import Image

    # A mid-grey square with a darker block: a valid JPEG of a few hundred bytes, always the same.
    img = Image.new("RGB", (size, size), (128, 128, 128))
    img.paste((60, 60, 60), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return pd.DataFrame({"image": [buf.getvalue()]})


def _pyfunc_kwargs(artifacts: Mapping[str, str]) -> dict[str, Any]:
    import PIL
    import torch

    settings = json.loads(Path(artifacts["settings"]).read_text())
    return dict(
        python_model=YoloPyfunc(), artifacts=dict(artifacts),
        signature=model_signature(settings["thresh"], settings["hier_thresh"], settings["nms"]),
        input_example=input_example(),
        # yolo_core and pipelines travel with the model: loading needs the pip requirements only.
        code_paths=[str(_PKG_ROOT / "yolo_core"), str(_PKG_ROOT / "pipelines")],
        # Explicit requirements: inferring them would load the model in a subprocess.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                          f"pillow=={PIL.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
                          "fsspec", "pyyaml"],
    )


def log_pyfunc(model: Any, *, name: str = "model", **bundle: Any) -> Any:
    """Log ``model`` as a pyfunc into the active MLflow run; returns MLflow's ModelInfo.

    ``bundle`` holds :func:`write_bundle`'s keywords (wnids, names, parents, config_yaml, ...).
    """
    with tempfile.TemporaryDirectory() as tmp:
        return mlflow.pyfunc.log_model(name=name, **_pyfunc_kwargs(write_bundle(tmp, model, **bundle)))


def save_pyfunc(path: str | Path, model: Any, **bundle: Any) -> None:
    """Save ``model`` as a pyfunc model directory (no tracking server needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(str(path), **_pyfunc_kwargs(write_bundle(tmp, model, **bundle)))


# --------------------------------------------------------------------------------------------
# Versions, aliases, promotion
# --------------------------------------------------------------------------------------------


@dataclass
class Decision:
    """What promotion did and why."""

    version: str
    promoted: bool
    reason: str
    value: float | None = None
    champion_version: str | None = None
    champion_value: float | None = None


def _client(tracking_uri: str | None = None):
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _raise_if_refused(e: mlflow.exceptions.MlflowException) -> None:
    """A server that refused the credentials (basic-auth: 401, or 403 for a user without the
    permission) is said so, with where the credentials come from."""
    if e.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        raise RegistryError(
            f"the MLflow server refused the request (HTTP {e.get_http_status_code()} {e.error_code}): "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)") from None


def fail_fast_http() -> None:
    """For interactive commands: no retry and a 20 s timeout per MLflow request, so an unreachable
    tracking server is reported in seconds (MLflow's defaults retry for about 4 minutes); rerunning
    is the user's call. Values already set in the environment win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def _is_not_found(e: mlflow.exceptions.MlflowException) -> bool:
    """The registry said the model / version / alias does not exist (not: it could not be asked)."""
    # An unknown alias comes back as INVALID_PARAMETER_VALUE "... alias X not found".
    return e.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        e.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(e.message))


@contextlib.contextmanager
def _mlflow_errors(tracking_uri: str | None, not_found: str) -> Iterator[None]:
    """MlflowException -> RegistryError: ``not_found`` when the registry says so, else a line
    naming the tracking server and what failed (unreachable, refused, server error)."""
    try:
        yield
    except mlflow.exceptions.MlflowException as e:
        _raise_if_refused(e)
        if _is_not_found(e):
            raise RegistryError(not_found) from None
        where = redaction.redact(tracking_uri or mlflow.get_tracking_uri())
        raise RegistryError(f"MLflow tracking server {where} failed ({e.error_code}): {redaction.describe(e)}") from None


def provenance_tags(*, fingerprints: Mapping[str, str] | None = None, tree_hash: str | None = None,
                    git_commit: str | None = None, metrics: Mapping[str, float] | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Version tags: ``data.<stage>.fingerprint``, ``tree_hash``, ``git_commit``, ``metric.<name>``."""
    from pipelines.manifest import code_version

    tags = {f"data.{k}.fingerprint": str(v) for k, v in (fingerprints or {}).items()}
    tags["tree_hash"] = tree_hash or ""
    tags["git_commit"] = git_commit or code_version()
    tags.update({f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in (metrics or {}).items()})
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


@contextlib.contextmanager
def using_tracking_uri(uri: str | None) -> Iterator[None]:
    """Point mlflow's module-level tracking and registry calls at ``uri`` for a moment (None: leave
    as is). mlflow's setters also export MLFLOW_REGISTRY_URI / MLFLOW_TRACKING_URI for subprocesses:
    those are put back too, or every later subprocess (``mlflow models serve``, a job) would inherit
    this store."""
    if uri is None:
        yield
        return
    prev = mlflow.get_registry_uri(), mlflow.get_tracking_uri()
    env = {k: os.environ.get(k) for k in ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI")}
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_registry_uri(prev[0])
        mlflow.set_tracking_uri(prev[1])
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register_version(model_uri: str, name: str, *, tags: Mapping[str, str], description: str,
                     tracking_uri: str | None = None) -> Any:
    """Register ``model_uri`` as a new version of ``name`` with tags and a description, and point
    the ``candidate`` alias at it. Returns the ModelVersion."""
    client = _client(tracking_uri)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if not _is_not_found(e):
            with _mlflow_errors(tracking_uri, ""):
                raise
        client.create_registered_model(name, description="YOLO9000 detectors (pyfunc: images in, detections out)")
    with using_tracking_uri(tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags=redaction.redact(dict(tags)))
    client.update_model_version(name, mv.version, description=redaction.redact(description))
    client.set_registered_model_alias(name, CANDIDATE, mv.version)
    return client.get_model_version(name, mv.version)


def metric_of(version: Any, metric: str) -> float | None:
    raw = version.tags.get(METRIC_PREFIX + metric)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def champion(name: str, tracking_uri: str | None = None) -> Any | None:
    client = _client(tracking_uri)
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException as e:
        if _is_not_found(e):
            return None
        with _mlflow_errors(tracking_uri, ""):
            raise


def _history(client: Any, name: str, tracking_uri: str | None = None) -> list[str]:
    with _mlflow_errors(tracking_uri, f"no registered model named {name!r}"):
        raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "[]")
    try:
        return [str(v) for v in json.loads(raw)]
    except (ValueError, TypeError):
        raise RegistryError(f"registered model {name!r}: tag {HISTORY_TAG!r} is not a JSON list: {raw[:80]!r}") \
            from None


def _set_champion(client: Any, name: str, version: str, history: list[str], previous: str | None,
                  trigger: str, reason: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    record_move(client, name, version, previous, trigger, reason)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a container
        return "unknown"


def record_move(client: Any, name: str, version: str, previous: str | None, trigger: str, reason: str) -> None:
    """Tag the registered model with one champion move (tags have no length limit in number,
    unlike one growing JSON value)."""
    import time

    seq = len(champion_moves(name, client=client)) + 1
    move = {"version": str(version), "from": previous, "at": int(time.time() * 1000), "by": _user(),
            "trigger": trigger, "reason": reason}
    client.set_registered_model_tag(name, f"{MOVE_TAG_PREFIX}{seq:04d}", json.dumps(move))


def champion_moves(name: str, tracking_uri: str | None = None, client: Any = None) -> list[dict[str, Any]]:
    """Every recorded champion move of ``name``, oldest first."""
    client = client or _client(tracking_uri)
    try:
        tags = client.get_registered_model(name).tags
    except mlflow.exceptions.MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    return [json.loads(tags[k]) for k in sorted(t for t in tags if t.startswith(MOVE_TAG_PREFIX))]


def promote_if_better(name: str, version: str | int, metric: str, margin: float = 0.0, *, force: bool = False,
                      tracking_uri: str | None = None, trigger: str = "promote") -> Decision:
    """Move ``champion`` to ``version`` when its metric beats the champion's by more than ``margin``
    (or when there is no champion yet, or ``force``). ``trigger`` (the register stage, a manual
    promote) is recorded with the move."""
    client = _client(tracking_uri)
    version = str(version)
    with _mlflow_errors(tracking_uri, f"registered model {name!r} has no version {version}"):
        mv = client.get_model_version(name, version)
    value = metric_of(mv, metric)
    cur = champion(name, tracking_uri)
    cur_value = metric_of(cur, metric) if cur is not None else None
    # str: the sqlite store gives int versions, the REST API strings.
    cur_version = str(cur.version) if cur is not None else None
    d = Decision(version, False, "", value, cur_version, cur_value)
    if cur_version == version:
        d.reason = f"version {version} is already the champion"
        return d
    if force:
        d.promoted, d.reason = True, "forced"
    elif value is None:
        d.reason = f"version {version} has no tag '{METRIC_PREFIX}{metric}': nothing to compare"
    elif cur is None:
        d.promoted, d.reason = True, "no champion yet"
    elif cur_value is None:
        d.reason = (f"champion version {cur_version} has no tag '{METRIC_PREFIX}{metric}'; "
                    "promote explicitly with force")
    elif value > cur_value + margin:
        d.promoted, d.reason = True, f"{metric} {value:.4f} > champion {cur_value:.4f} + margin {margin:g}"
    else:
        d.reason = f"{metric} {value:.4f} does not beat champion {cur_value:.4f} + margin {margin:g}"
    if d.promoted:
        history = _history(client, name, tracking_uri)
        if cur_version is not None and (not history or history[-1] != cur_version):
            history.append(cur_version)  # a champion set outside this module still gets a way back
        _set_champion(client, name, version, history + [version], cur_version, trigger, d.reason)
    return d


def rollback(name: str, to_version: str | int | None = None, tracking_uri: str | None = None,
             trigger: str = "rollback") -> str:
    """Point ``champion`` back at the previous champion (or at ``to_version``); returns the version."""
    client = _client(tracking_uri)
    history = _history(client, name, tracking_uri)
    cur = champion(name, tracking_uri)
    cur_version = str(cur.version) if cur is not None else None  # an int from the sqlite store
    if cur_version is not None and history and history[-1] == cur_version:
        history = history[:-1]
    if to_version is None:
        if not history:
            raise RegistryError(f"registered model {name!r}: no earlier champion to roll back to")
        target = history[-1]
    else:
        target = str(to_version)
        with _mlflow_errors(tracking_uri, f"registered model {name!r} has no version {target}"):
            client.get_model_version(name, target)
        history = history + [target] if not history or history[-1] != target else history
    reason = f"rolled back to version {target}" + (" (chosen)" if to_version is not None else " (the previous champion)")
    _set_champion(client, name, target, history, cur_version, trigger, reason)
    return target


def list_versions(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: version, aliases, status, metrics, run id, created."""
    client = _client(tracking_uri)
    with _mlflow_errors(tracking_uri, f"no registered model named {name!r}"):
        rm = client.get_registered_model(name)
    aliases: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        aliases.setdefault(str(v), []).append(alias)
    rows = []
    with _mlflow_errors(tracking_uri, f"no registered model named {name!r}"):
        versions = client.search_model_versions(f"name = '{name}'")
    for mv in versions:
        rows.append({"version": mv.version, "aliases": sorted(aliases.get(str(mv.version), [])),
                     "status": mv.status, "run_id": mv.run_id, "created": mv.creation_timestamp,
                     "metrics": {k[len(METRIC_PREFIX):]: v for k, v in mv.tags.items() if k.startswith(METRIC_PREFIX)}})
    return sorted(rows, key=lambda r: -int(r["version"]))


def show_version(name: str, version_or_alias: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """One version (by number or alias): tags, description, aliases, source."""
    client = _client(tracking_uri)
    with _mlflow_errors(tracking_uri, f"registered model {name!r} has no version or alias {version_or_alias!r}"):
        mv = (client.get_model_version(name, version_or_alias) if version_or_alias.isdigit()
              else client.get_model_version_by_alias(name, version_or_alias))
    return {"name": name, "version": mv.version, "aliases": list(mv.aliases or []), "status": mv.status,
            "description": mv.description, "source": mv.source, "run_id": mv.run_id, "tags": dict(mv.tags)}


def load_pyfunc(uri: str, backend: str = "auto", precision: str = "auto") -> YoloPyfunc:
    """The YoloPyfunc behind an MLflow model URI (``models:/name@champion``, ``runs:/...``) or a
    local model directory, loaded (its detector on ``backend``, see ``Detector``)."""
    try:
        pf = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except Exception as e:  # noqa: BLE001 - a model folder is untrusted input: bad MLmodel, pickle, weights, JSON
        raise RegistryError(f"cannot load model {storage.redact_uri(uri)!r}: {redaction.describe(e)}") from None
    if (backend, precision) != ("auto", "auto"):
        pf.detector.set_backend(backend, precision, pf.onnx_file)
    return pf


def load_detector(uri: str) -> Any:
    """The Detector (model, tree, settings) of an MLflow model logged by :func:`log_pyfunc`."""
    return load_pyfunc(uri).detector
