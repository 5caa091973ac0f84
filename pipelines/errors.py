"""Errors whose message is complete for a user (they name the file, record and field), and the
one top-level handler of the CLI and the job entrypoint.

The CLI prints any exception whose class sets ``user_facing = True`` without a traceback;
packages that must not import `pipelines` (wordtree_build, yolo_core) mark their own classes.
Any other exception (fsspec, botocore, Ray, ...) becomes one redacted line too; ``--debug`` or
``Y9K_DEBUG=1`` adds the (redacted) traceback.
"""

from __future__ import annotations

import os
import sys

DEBUG_ENV = "Y9K_DEBUG"


class PipelineError(RuntimeError):
    user_facing = True


class StageError(PipelineError):
    """A stage failed on its input; the message says which stage, file and record."""


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report_failure(prog: str, what: str, e: BaseException, debug: bool = False) -> int:
    """Print ``<prog>: <what>: <redacted reason>`` (one line) on stderr; the exit status (1).

    Exceptions from libraries may carry a URI with credentials (botocore repeats the bucket
    name s3fs parsed out of ``s3://KEY:SECRET@bucket``): everything shown is redacted.
    """
    from pipelines import redaction

    hint = ""
    if debug_enabled(debug):
        print(redaction.redacted_traceback(e), file=sys.stderr, end="")
    elif not getattr(type(e), "user_facing", False):
        hint = f" (traceback: --debug or {DEBUG_ENV}=1)"
    print(f"{prog}: {what}: {redaction.describe(e)}{hint}", file=sys.stderr)
    return 1
