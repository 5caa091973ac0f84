"""URIs everywhere: one place that turns a path or URI into an fsspec filesystem.

Every path in the config is a URI (a local path, ``file://``, ``s3://``, ``gs://``, ...).
Storage options (keys, endpoints) travel next to the URI and are never printed: every value
that reaches a user, a log, an MLflow param or a file goes through :func:`pipelines.redaction.redact`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from pipelines import redaction

# One redaction for the whole project (pipelines/redaction.py); these names are kept for callers.
redact_uri = redaction.redact
redact_options = redaction.redact
is_secret_option = redaction.is_secret_name
REDACTED = redaction.REDACTED


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def normalize(uri: str) -> str:
    """Local paths become absolute (Ray workers may run elsewhere); URIs stay as they are."""
    if "://" in uri:
        return uri.rstrip("/") if len(uri.split("://", 1)[1]) > 1 else uri
    return os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    base = base.rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts if p]])


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None):
    """(filesystem, path inside it) for a URI."""
    fs, path = url_to_fs(uri, **dict(storage_options or {}))
    return fs, path


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return fs.exists(path)


@contextmanager
def open_uri(uri: str, mode: str = "rb", storage_options: Mapping[str, Any] | None = None) -> Iterator[Any]:
    with fsspec.open(uri, mode, **dict(storage_options or {})) as f:
        yield f


class NotRegularFileError(OSError):
    """A local path that is a FIFO, a socket, a device or a folder: never opened (a FIFO blocks)."""


def _local_path(uri: str) -> str | None:
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    return local if "://" not in local and "::" not in local else None


def is_irregular_local_file(uri: str) -> bool:
    """A local path that exists and is not a regular file (FIFO, socket, device, folder): never to be
    opened, since opening a FIFO waits for a writer for ever."""
    local = _local_path(uri)
    try:
        return local is not None and not stat.S_ISREG(os.stat(local).st_mode)
    except FileNotFoundError:
        return False


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    local = _local_path(uri)
    if local is not None:  # a plain local path: skip fsspec's per-call resolution
        # stat before open: opening a FIFO waits for a writer for ever.
        if not stat.S_ISREG(os.stat(local).st_mode):
            raise NotRegularFileError(f"{local}: not a regular file")
        with open(local, "rb") as f:
            return f.read()
    fs, path = filesystem(uri, storage_options)
    return fs.cat_file(path)


def read_text(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    return read_bytes(uri, storage_options).decode("utf-8")


def write_bytes(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a whole file so that readers never see half of it (see :func:`write_stream`)."""
    write_stream(uri, lambda f: f.write(data), storage_options)


def write_stream(uri: str, write: Callable[[Any], Any], storage_options: Mapping[str, Any] | None = None) -> int:
    """Call ``write(file)`` on a new file so that readers never see half of it; its size in bytes.

    Local files go through a temporary name and an atomic rename, written as they are produced
    (no copy of a 128 MiB shard in memory first). Object stores get one put of the whole object,
    which they publish only when complete (an fsspec file would publish a failed write's part
    on close).
    """
    fs, path = filesystem(uri, storage_options)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fs.protocol in ("file", "local") or "file" in (fs.protocol if isinstance(fs.protocol, tuple) else ()):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                write(f)
                size = f.tell()
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return size
    buf = io.BytesIO()
    write(buf)
    fs.pipe_file(path, buf.getvalue())
    return buf.tell()


def write_text(uri: str, text: str, storage_options: Mapping[str, Any] | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), storage_options)


def write_json(uri: str, obj: Any, storage_options: Mapping[str, Any] | None = None) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", storage_options)


def read_json(uri: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    text = read_text(uri, storage_options)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{redact_uri(uri)}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def makedirs(uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, path = filesystem(uri, storage_options)
    fs.makedirs(path, exist_ok=True)


def remove(uri: str, storage_options: Mapping[str, Any] | None = None, recursive: bool = True) -> None:
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def list_files(uri: str, storage_options: Mapping[str, Any] | None = None, suffix: str = "") -> list[str]:
    """Every file below a URI (recursively), as full URIs, sorted."""
    fs, path = filesystem(uri, storage_options)
    if not fs.exists(path):
        return []
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    files = sorted(p for p in fs.find(path) if p.endswith(suffix))
    if "://" in uri:
        return [f"{protocol}://{p}" if not p.startswith(f"{protocol}://") else p for p in files]
    return files
