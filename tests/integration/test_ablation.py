"""`y9k ablation --steps table2` plumbing: two columns, a few steps, tiny inputs, a local Ray instance.

The columns are 'yolo' (YOLOv1's FC head and [detection] loss) and 'dimension_priors' (a region
head on Darknet-19 with the anchors stage's k-means priors, after the hi-res classifier phase that
every column from the third on has): both heads and the classifier phase go through Ray Train,
evaluation, the table files and MLflow (a real sqlite store). The figures mean nothing at this size.
"""

from __future__ import annotations

import csv
import json

import pytest

# Three Ray Train runs and two Ray Data evaluations: 4 min 56 s on the shared 2-core machine at load
# average ~20 (far over the 25 s asked for; unmeasured on an idle machine), hence `slow`.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow]

TINY = [
    "sample_data.scale=tiny", "model.width=0.0625",
    "model.table2.yolo_input_size=64", "model.table2.input_size=64", "model.table2.hires_test_size=96",
    "train.max_steps=2", "train.batch_size=4", "train.steps=[1]", "train.scales=[0.1]", "train.burn_in=0",
    "train.checkpoint_every=2", "train.log_every=1", "train.multiscale_min=64", "train.multiscale_max=96",
    "ablation.classifier_steps=2", "eval.draw_images=0", "mlflow.experiment=ablation-test",
]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    import ray

    from pipelines.ablation import run_ablation
    from pipelines.config import load_config

    root = tmp_path_factory.mktemp("ablation")
    cfg = load_config("demo", [f"storage.root={root / 'data'}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                               "ray.num_cpus=3", *TINY])
    try:
        yield cfg, run_ablation(cfg, "table2", ["dimension_priors", "yolo"])
    finally:
        ray.shutdown()


def test_each_column_trains_evaluates_and_lands_in_the_table(ablation):
    from yolo_core import table2
    from yolo_core.flops import count_flops

    cfg, result = ablation
    assert [r.step for r in result.rows] == ["yolo", "dimension_priors"]  # the path's order
    for r in result.rows:
        assert 0 <= r.map50 <= 1 and r.train_steps == 2 and r.test_images_per_s > 0
        sw = table2.settings(r.step, cfg.model.table2)
        assert r.switches == sw.switches() and (r.train_size, r.test_size) == (sw.train_size, sw.test_size)
    v1, v2 = result.rows
    assert v1.classifier_run_id is None and v2.classifier_run_id  # the hi-res classifier from column 3 on
    # FLOPs: darknet's count of the network as built (one output per evaluated class), at the test size.
    from pipelines.layout import Layout
    from pipelines.stages.wordtree import load_det_classes

    classes = len(load_det_classes(Layout.of(cfg.storage).wordtree))
    expected = table2.build_detector(table2.settings("yolo", cfg.model.table2), classes, 0.0625)
    assert v1.bflops == pytest.approx(count_flops(expected, 64, 64), rel=1e-3)

    with open(result.files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["yolo", "dimension_priors"]
    assert [float(r["paper_voc2007_map"]) for r in rows] == [63.4, 74.4]
    md = open(result.files["md"]).read()
    assert "VOC 2007 mAP (paper)" in md and "| yolo | YOLO (v1) | 64 | 64 |" in md
    assert open(result.files["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.load(open(result.files["json"]))
    assert saved["rows"][1]["step"] == "dimension_priors" and "Table 2" in saved["paper_source"]
    # The k-means anchors of the anchors stage, not Faster R-CNN's nine.
    assert saved["rows"][1]["switches"]["dimension_priors"] and not saved["rows"][1]["switches"]["anchor_boxes"]


def test_mlflow_has_one_parent_with_a_child_per_column(ablation):
    from mlflow import MlflowClient

    cfg, result = ablation
    client = MlflowClient(cfg.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("ablation-test")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    by_phase = {}
    for run in children:
        by_phase.setdefault(run.data.tags["table2.phase"], []).append(run)
    assert sorted(r.data.tags["table2.step"] for r in by_phase["detection"]) == ["dimension_priors", "yolo"]
    assert [r.info.run_id for r in by_phase["classifier"]] == [result.rows[1].classifier_run_id]
    for run in by_phase["detection"]:  # the evaluation logged into the column's run
        assert "map50_all" in run.data.metrics
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["map50_dimension_priors"] == pytest.approx(result.rows[1].map50)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"table2.md", "table2.csv", "table2.png", "table2.json"} <= artifacts
