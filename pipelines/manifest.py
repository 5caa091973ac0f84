"""Stage manifests: what makes a stage idempotent and its output atomic.

A stage writes its files into its output directory, then writes ``manifest.json`` last.
A directory without a manifest is incomplete (an interrupted run) and is never read; a
manifest whose input fingerprint and config hash match the current ones means the stage can
be skipped.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines import redaction, storage

MANIFEST_NAME = "manifest.json"


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def fingerprint_uris(uris: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> str:
    """A cheap fingerprint of input trees: every file's relative name and size (and ETag or
    mtime where the store gives one). Reading contents would cost as much as the stage itself."""
    entries = []
    for uri in uris:
        fs, root = storage.filesystem(uri, storage_options)
        if not fs.exists(root):
            entries.append((storage.redact_uri(uri), "missing"))
            continue
        if fs.isfile(root):
            info = fs.info(root)
            entries.append((storage.redact_uri(uri), info.get("size"), _version_of(info)))
            continue
        for path, info in sorted(fs.find(root, detail=True).items()):
            rel = path[len(root.rstrip("/")) + 1 :]
            if rel.endswith(MANIFEST_NAME):
                continue
            entries.append((storage.redact_uri(uri), rel, info.get("size"), _version_of(info)))
    return stable_hash(entries)


def _version_of(info: Mapping[str, Any]) -> Any:
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "created"):
        if key in info:
            return str(info[key])
    return None


def code_version() -> str:
    """The git commit of the project, or the package version outside a checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("yolo9000-pipeline")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Manifest:
    stage: str
    inputs_fingerprint: str
    config_hash: str
    code_version: str = field(default_factory=code_version)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    counts: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def manifest_uri(out_uri: str) -> str:
    return storage.join(out_uri, MANIFEST_NAME)


def read_manifest(out_uri: str, storage_options: Mapping[str, Any] | None = None) -> Manifest | None:
    uri = manifest_uri(out_uri)
    if not storage.exists(uri, storage_options):
        return None
    return Manifest.from_dict(storage.read_json(uri, storage_options))


def is_complete(
    out_uri: str,
    inputs_fingerprint: str,
    config_hash: str,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """True when a previous run with the same inputs and config finished writing."""
    m = read_manifest(out_uri, storage_options)
    return m is not None and m.inputs_fingerprint == inputs_fingerprint and m.config_hash == config_hash


def commit(out_uri: str, manifest: Manifest, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write the manifest last: from this moment the stage output is visible."""
    storage.write_json(manifest_uri(out_uri), redaction.redact(manifest.to_dict()), storage_options)
