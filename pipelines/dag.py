"""A small stage runner: ordered stages, manifest caching, --only / --from / --dry-run, timings.

A stage is skipped when the ``manifest.json`` in its output directory records the same input
fingerprint and config hash as now. Inputs of a downstream stage include the manifests of the
stages it reads, so a change upstream re-runs everything below it, and a job resubmitted after
a driver crash continues from the first stage that did not finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines import manifest, redaction
from pipelines.errors import PipelineError

log = logging.getLogger("y9k.dag")


@dataclass
class Stage:
    name: str
    description: str
    # Output directory URI of the stage (its manifest lives there).
    out: Callable[[Any], str]
    # Fingerprint of everything the stage reads, and hash of the config it depends on.
    fingerprint: Callable[[Any], str]
    config_hash: Callable[[Any], str]
    # Does the work and commits the manifest; returns a small summary dict for the report.
    run: Callable[[Any], dict[str, Any]]
    # A reason to skip the stage under this config or state (None: run it), e.g. no sample
    # data wanted, or a scheduled retrain that finds no new data.
    skip_reason: Callable[[Any], str | None] = lambda ctx: None
    # Never cached (e.g. registering a model version is an action, not a derived output).
    always_run: bool = False


@dataclass
class StageOutcome:
    name: str
    status: str  # ran | cached | skipped | would-run | would-skip | failed
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class StageFailed(PipelineError):
    pass


def select(stages: Sequence[Stage], only: Sequence[str] = (), start: str | None = None) -> list[Stage]:
    names = [s.name for s in stages]
    for n in [*only, *([start] if start else [])]:
        if n not in names:
            raise PipelineError(f"unknown stage {n!r}; stages are: {', '.join(names)}")
    if only:
        return [s for s in stages if s.name in only]
    if start:
        return list(stages[names.index(start):])
    return list(stages)


def _cache_state(stage: Stage, ctx: Any, storage_options) -> tuple[bool, str]:
    if stage.always_run:
        return False, "always runs"
    try:
        fp, ch = stage.fingerprint(ctx), stage.config_hash(ctx)
    except Exception as e:  # upstream output missing (dry run, --only): the stage cannot be cached
        return False, f"inputs not ready ({e})"
    if manifest.is_complete(stage.out(ctx), fp, ch, storage_options):
        return True, "manifest matches inputs and config"
    m = manifest.read_manifest(stage.out(ctx), storage_options)
    if m is None:
        return False, "no complete output yet"
    return False, "inputs changed" if m.inputs_fingerprint != fp else "config changed"


def run_stages(stages: Sequence[Stage], ctx: Any, *, dry_run: bool = False, force: Sequence[str] = (),
               storage_options=None) -> list[StageOutcome]:
    """Run the stages in order; stop at the first failure with a StageFailed naming it."""
    outcomes: list[StageOutcome] = []
    for stage in stages:
        reason = stage.skip_reason(ctx)
        if reason:
            log.info("stage %s: skipped (%s)", stage.name, reason)
            outcomes.append(StageOutcome(stage.name, "skipped", reason=reason))
            continue
        cached, reason = _cache_state(stage, ctx, storage_options)
        if stage.name in force:
            cached, reason = False, "forced"
        if dry_run:
            outcomes.append(StageOutcome(stage.name, "would-skip" if cached else "would-run", reason=reason))
            continue
        if cached:
            log.info("stage %s: cached (%s)", stage.name, reason)
            outcomes.append(StageOutcome(stage.name, "cached", reason=reason))
            continue
        log.info("stage %s: running (%s)", stage.name, reason)
        t0 = time.perf_counter()
        try:
            summary = stage.run(ctx) or {}
        except Exception as e:
            seconds = time.perf_counter() - t0
            why = redaction.describe(e)  # one redacted line: Ray and botocore errors may carry a URI
            outcomes.append(StageOutcome(stage.name, "failed", seconds, reason=why))
            raise StageFailed(f"stage {stage.name} failed after {seconds:.1f}s: {why}") from e
        seconds = time.perf_counter() - t0
        log.info("stage %s: done in %.1fs", stage.name, seconds)
        outcomes.append(StageOutcome(stage.name, "ran", seconds, summary=summary, reason=reason))
    return outcomes


def format_report(outcomes: Sequence[StageOutcome]) -> str:
    rows = [("stage", "status", "time", "detail")]
    for o in outcomes:
        detail = o.reason if o.status != "ran" else ", ".join(f"{k}={v}" for k, v in list(o.summary.items())[:4])
        rows.append((o.name, o.status, f"{o.seconds:.1f}s" if o.seconds else "-", detail))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * min(100, max(len(x) for x in lines)))
    return "\n".join(lines)
