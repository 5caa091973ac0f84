"""The stage runner: caching by manifest, propagation of upstream changes, selection, failures."""

from __future__ import annotations

import pytest

from pipelines import dag, manifest, storage
from pipelines.errors import PipelineError


class Ctx:
    def __init__(self, root, source):
        self.root, self.source, self.calls, self.param = root, source, [], "a"


def _make_stages():
    def run_a(ctx):
        ctx.calls.append("a")
        text = storage.read_text(ctx.source)
        storage.write_text(storage.join(ctx.root, "a", "out.txt"), text.upper())
        manifest.commit(storage.join(ctx.root, "a"), manifest.Manifest(
            "a", manifest.fingerprint_uris([ctx.source]), ctx.param))
        return {"chars": len(text)}

    def run_b(ctx):
        ctx.calls.append("b")
        text = storage.read_text(storage.join(ctx.root, "a", "out.txt"))
        storage.write_text(storage.join(ctx.root, "b", "out.txt"), text[::-1])
        manifest.commit(storage.join(ctx.root, "b"), manifest.Manifest(
            "b", manifest.fingerprint_uris([storage.join(ctx.root, "a", "manifest.json")]), "b"))
        return {}

    return [
        dag.Stage("a", "upper-case", lambda c: storage.join(c.root, "a"),
                  lambda c: manifest.fingerprint_uris([c.source]), lambda c: c.param, run_a),
        dag.Stage("b", "reverse", lambda c: storage.join(c.root, "b"),
                  lambda c: manifest.fingerprint_uris([storage.join(c.root, "a", "manifest.json")]),
                  lambda c: "b", run_b),
    ]


def test_cache_and_propagation(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    ctx = Ctx(str(tmp_path / "out"), str(src))
    stages = _make_stages()
    assert [o.status for o in dag.run_stages(stages, ctx, dry_run=True)] == ["would-run", "would-run"]
    assert ctx.calls == []
    assert [o.status for o in dag.run_stages(stages, ctx)] == ["ran", "ran"]
    assert (tmp_path / "out" / "b" / "out.txt").read_text() == "CBA"
    assert [o.status for o in dag.run_stages(stages, ctx)] == ["cached", "cached"]
    assert ctx.calls == ["a", "b"]
    ctx.param = "changed"  # config of a changes: a re-runs, and b because a's manifest changed
    outcomes = dag.run_stages(stages, ctx, dry_run=True)
    assert [o.status for o in outcomes] == ["would-run", "would-skip"] and outcomes[0].reason == "config changed"
    assert [o.status for o in dag.run_stages(stages, ctx)] == ["ran", "ran"]
    src.write_text("abcd")
    assert dag.run_stages(stages, ctx, dry_run=True)[0].reason == "inputs changed"
    assert "stage" in dag.format_report(dag.run_stages(stages, ctx))


def test_selection_and_unknown_stage(tmp_path):
    stages = _make_stages()
    assert [s.name for s in dag.select(stages, only=["b"])] == ["b"]
    assert [s.name for s in dag.select(stages, start="b")] == ["b"]
    with pytest.raises(PipelineError, match="unknown stage 'c'; stages are: a, b"):
        dag.select(stages, only=["c"])


def test_failure_names_the_stage(tmp_path):
    ctx = Ctx(str(tmp_path / "out"), str(tmp_path / "missing.txt"))
    with pytest.raises(dag.StageFailed, match=r"stage a failed after .*s: FileNotFoundError"):
        dag.run_stages(_make_stages(), ctx)
