"""Errors of the WordTree package: complete messages (file, line, field) for a user.

The `y9k` CLI prints exceptions whose class sets ``user_facing = True`` without a traceback.
"""

from __future__ import annotations


class WordTreeError(ValueError):
    """Bad label list, tree file or label map; the message names the file, line and field."""

    user_facing = True


def where(source: str | None, line: int | None) -> str:
    """A message prefix such as ``9k.tree line 12: `` (empty when nothing is known)."""
    if source and line is not None:
        return f"{source} line {line}: "
    if source:
        return f"{source}: "
    if line is not None:
        return f"line {line}: "
    return ""
