"""Console progress for the long stages, printed by the driver (training: pipelines/train/progress.py).

On a terminal a live tqdm bar; otherwise (a log file, `ray job submit`, CI) one line per update,
so that a log says what the stage was doing and when it expected to end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Items done out of a total: a tqdm bar on a terminal, else a line every ``every`` items
    (and at the end). ``update(n, **fields)`` adds n items and shows ``fields`` beside the rate."""

    def __init__(self, what: str, total: int, unit: str = "images", every: int = 50,
                 stream: TextIO | None = None, terminal: bool | None = None) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, max(1, every)
        self.stream = stream or sys.stderr
        self.done, self.start, self._last_line = 0, time.perf_counter(), 0
        self.bar = None
        if terminal if terminal is not None else is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit.rstrip("s") or unit, file=self.stream,
                            dynamic_ncols=True)

    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if fields:
                self.bar.set_postfix_str(_fields(fields), refresh=False)
        elif self.done - self._last_line >= self.every or self.done >= self.total:
            self._last_line = self.done
            self.stream.write(self.line(**fields) + "\n")
            self.stream.flush()

    def line(self, **fields: Any) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        extra = f", {_fields(fields)}" if fields else ""
        return (f"{self.what}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s{extra}, "
                f"elapsed {format_duration(time.perf_counter() - self.start)}, ETA {format_duration(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fields(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in fields.items())
