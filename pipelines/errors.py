"""Errors whose message is complete for a user (they name the file, record and field).

The CLI prints any exception whose class sets ``user_facing = True`` without a traceback;
packages that must not import `pipelines` (wordtree_build, yolo_core) mark their own classes.
"""


class PipelineError(RuntimeError):
    user_facing = True


class StageError(PipelineError):
    """A stage failed on its input; the message says which stage, file and record."""
