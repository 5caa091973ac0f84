"""Logging set up once for the CLI and the job entrypoint: timestamps, the stage, no secrets."""

from __future__ import annotations

import logging
import os
import sys


class RedactingFormatter(logging.Formatter):
    """Every log line, tracebacks included, goes through pipelines.secrets.redact."""

    def format(self, record: logging.LogRecord) -> str:
        from pipelines.secrets import redact_text

        return redact_text(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (not the one at set-up: tests and wrappers swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    level = int(os.environ.get("Y9K_LOG_LEVEL", level)) if os.environ.get("Y9K_LOG_LEVEL", "").isdigit() else level
    root = logging.getLogger()
    if not any(getattr(h, "_y9k", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._y9k = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Libraries that are loud at INFO.
    for name in ("botocore", "urllib3", "s3fs", "aiobotocore", "fsspec", "matplotlib", "PIL", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
