"""The ablation grid's bookkeeping (tests/benchmarks/bench_learning.py): the order of its runs,
the record it rewrites after every run (partial, then complete), the verdict with the classes
that fail, and resuming a stopped grid only when the code and budget are the same. The run
summaries are written here by hand: training them is the benchmark's job (minutes each)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_learning_under_test", None)


def summary(world, seed, setting, unseen, ap, found=(10, 8, 6)):
    boxes, f, right = found
    return {"world": world, "seed": seed, "setting": setting, "map50_seen": 0.4, "map50_unseen": unseen,
            "ap50_unseen": ap, "wall_s": 1.0, "loadavg_1m_before_after": [0.0, 0.0],
            # The shape of pipelines.evaluate.metrics.sibling_accuracy's result, names for indices.
            "siblings": {"boxes": boxes * len(ap), "found": f * len(ap), "right": right * len(ap),
                         "found_rate": f / boxes, "sibling_accuracy": right / f,
                         "per_class": {c: {"boxes": boxes, "found": f, "right": right} for c in ap},
                         "any_class": {c: {"boxes": boxes, "found": boxes - 1, "right": right} for c in ap}}}


def test_runs_go_seed_by_seed_world_by_world_baseline_first(bench):
    order = [(w, s, n) for w, s, n, _ in bench.planned_runs(["zoo", "depot"], [0, 1], ["label", "object"])]
    assert order[:6] == [("zoo", 0, "detect"), ("zoo", 0, "joint_label"), ("zoo", 0, "joint_object"),
                         ("depot", 0, "detect"), ("depot", 0, "joint_label"), ("depot", 0, "joint_object")]
    assert order[6:] == [(w, 1, n) for w, _, n in order[:6]] and len(set(order)) == 12


def test_partial_record_then_complete_verdict_names_failing_classes(bench, tmp_path):
    planned = bench.planned_runs(["zoo", "depot"], [0], ["object"])
    identity = {"commit": "abc", "overrides": []}
    workload = {"grid_identity": identity}
    out = tmp_path / "grid.json"

    def write(out, runs):
        return bench.write_record(out, runs=runs, planned=planned, rules=["object"], workload=workload, machine={},
                                  smoke=False)

    runs = [summary("zoo", 0, "detect", 0.10, {"ibex": 0.1, "okapi": 0.1}),
            summary("zoo", 0, "joint_object", 0.30, {"ibex": 0.5, "okapi": 0.1})]
    assert not write(out, runs)
    rec = json.loads(out.read_text())
    assert rec["partial"] and rec["not_run"] == ["depot/seed0/detect", "depot/seed0/joint_object"]
    assert rec["verdicts"] == {"object": True} and not rec["meets_target"]  # met so far, but not everywhere yet
    assert rec["notes"].startswith("PARTIAL")
    # A joint run whose baseline is not recorded yet is not judged (no KeyError, no verdict).
    runs.append(summary("depot", 0, "joint_object", 0.05, {"lemon": 0.05}))
    write(out, runs)
    assert json.loads(out.read_text())["failures"] == []
    runs.insert(2, summary("depot", 0, "detect", 0.04, {"lemon": 0.04}, found=(20, 4, 0)))
    runs[-1] = summary("depot", 0, "joint_object", 0.05, {"lemon": 0.05}, found=(20, 5, 1))
    assert not write(out, runs)
    rec = json.loads(out.read_text())
    assert not rec["partial"] and rec["verdicts"] == {"object": False} and not rec["meets_target"]
    (fail,) = rec["failures"]
    assert (fail["world"], fail["seed"], fail["ratio"]) == ("depot", 0, pytest.approx(1.25))
    assert fail["classes_below_target"] == {"lemon": {"ap50_joint": 0.05, "ap50_detect": 0.04, "found_rate": 0.25,
                                                      "sibling_accuracy": 0.2, "found_by_any_class_rate": 0.95}}
    assert rec["metrics"]["joint_object_unseen_min"]["value"] == 0.05
    table = bench.markdown_table(rec).splitlines()
    assert len(table) == 2 + 4 and table[-1] == "| depot | 0 | joint, object | 0.050 | 1.25x | 0.400 | 25% of 20 | 20% |"
    # A rule added to a finished grid runs last but is listed in its world and seed's block.
    runs.append(summary("zoo", 0, "joint_image", 0.2, {"ibex": 0.2}))
    table = bench.markdown_table({"metrics": {"runs": {"value": runs}}}).splitlines()
    assert [ln.split(" | ")[:3] for ln in table[2:]] == [
        ["| zoo", "0", "detect"], ["| zoo", "0", "joint, object"], ["| zoo", "0", "joint, image"],
        ["| depot", "0", "detect"], ["| depot", "0", "joint, object"]]


def test_resume_only_the_same_code_and_budget(bench, tmp_path):
    planned = bench.planned_runs(["zoo"], [0], ["object"])
    identity = {"commit": "abc", "overrides": ["train.max_steps=600"]}
    out = tmp_path / "grid.json"
    runs = [summary("zoo", 0, "detect", 0.1, {"ibex": 0.1})]
    bench.write_record(out, runs=runs, planned=planned, rules=["object"], workload={"grid_identity": identity},
                       machine={}, smoke=False)
    assert bench.recorded_runs(out, identity, fresh=False) == runs
    assert bench.recorded_runs(out, identity, fresh=True) == []
    with pytest.raises(SystemExit, match="holds 1 runs of another grid.*--fresh"):
        bench.recorded_runs(out, {**identity, "commit": "def"}, fresh=False)
    assert bench.recorded_runs(tmp_path / "absent.json", identity, fresh=False) == []
