"""The model registry against a real `mlflow server`: pyfunc logging, versions with provenance
tags, `candidate` / `champion` aliases, promotion by metric and margin, rollback, the CLI, the
evaluation logged into a training run, and loading `models:/<name>@champion` in a fresh process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines import registry
from pipelines.cli import main
from pipelines.config import load_config
from pipelines.evaluate import metrics as M
from pipelines.evaluate import plots
from pipelines.evaluate.stage import log_evaluation
from tests.unit.pipelines.test_predict import NAMES, PARENTS, WNIDS, crafted_model, noise_image

NAME = "y9k-registry-test"
METRIC = "map50_all"


@pytest.fixture(scope="module")
def server(mlflow_server):
    from pipelines.registry import using_tracking_uri

    with using_tracking_uri(mlflow_server):
        yield mlflow_server


@pytest.fixture(scope="module")
def logged(server):
    """A training run with the pyfunc model logged into it: (run id, model URI)."""
    mlflow.set_experiment("y9k-registry-test")
    with mlflow.start_run(run_name="train") as run:
        info = registry.log_pyfunc(crafted_model(), wnids=WNIDS, names=NAMES, parents=PARENTS, input_size=64,
                                   thresh=0.24, config_yaml=load_config("demo").to_yaml())
    return run.info.run_id, info.model_uri


def _register(model_uri: str, value: float) -> str:
    tags = registry.provenance_tags(fingerprints={"shards/imagenet_det-val": "f00d"}, tree_hash="abc123",
                                    metrics={METRIC: value, "map50_unseen": value / 2})
    mv = registry.register_version(model_uri, NAME, tags=tags, description=f"test model, {METRIC}={value}")
    return str(mv.version)


def _aliases() -> dict[str, str]:
    return {k: str(v) for k, v in mlflow.MlflowClient().get_registered_model(NAME).aliases.items()}


def test_versions_aliases_promotion_and_rollback(server, logged, capsys, monkeypatch):
    _, uri = logged
    v1 = _register(uri, 0.30)
    assert _aliases() == {"candidate": v1}
    d = registry.promote_if_better(NAME, v1, METRIC, 0.01)
    assert d.promoted and d.reason == "no champion yet"

    v2 = _register(uri, 0.305)  # better, but not by the margin
    d = registry.promote_if_better(NAME, v2, METRIC, 0.01)
    assert not d.promoted and d.champion_version == v1 and "does not beat" in d.reason
    assert _aliases() == {"candidate": v2, "champion": v1}

    v3 = _register(uri, 0.40)
    assert registry.promote_if_better(NAME, v3, METRIC, 0.01).promoted
    assert _aliases() == {"candidate": v3, "champion": v3}

    shown = registry.show_version(NAME, "champion")
    assert shown["version"] == v3 and shown["description"] == f"test model, {METRIC}=0.4"
    for key in ("data.shards/imagenet_det-val.fingerprint", "tree_hash", "git_commit", f"metric.{METRIC}"):
        assert shown["tags"][key], key
    assert float(shown["tags"][f"metric.{METRIC}"]) == 0.40

    # The CLI, configured for this server and model.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    args = ["--set", f"mlflow.registered_model={NAME}", "--set", "mlflow.promote_margin=0.01"]
    assert main(["registry", "list", *args]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert "champion" in lines[v3] and "candidate" in lines[v3] and "0.4" in lines[v3]
    assert main(["registry", "promote", v2, *args]) == 1
    assert "not promoted" in capsys.readouterr().out
    assert main(["registry", "rollback", *args]) == 0
    assert f"champion is now version {v1}" in capsys.readouterr().out
    assert _aliases()["champion"] == v1
    assert main(["registry", "rollback", *args]) == 1
    assert "no earlier champion" in capsys.readouterr().err
    assert main(["registry", "promote", v3, *args]) == 0  # back to the best one
    assert _aliases()["champion"] == v3
    assert main(["registry", "show", "99", *args]) == 1
    assert "has no version or alias '99'" in capsys.readouterr().err


def test_champion_predicts_in_a_fresh_process(server, logged, tmp_path):
    if registry.champion(NAME) is None:
        registry.promote_if_better(NAME, _register(logged[1], 0.5), METRIC)
    paths = []
    for k, size in enumerate((128, 96)):
        p = tmp_path / f"img{k}.jpg"
        noise_image(size, k).save(p, quality=95)
        paths.append(str(p))
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        "paths = json.loads(sys.argv[1])\n"
        "by_path = m.predict(pd.DataFrame({'path': paths}))\n"
        "by_bytes = m.predict(pd.DataFrame({'image': [open(p, 'rb').read() for p in paths]}), params={'thresh': 0.99})\n"
        "print(json.dumps({'by_path': by_path.to_dict('records'), 'n_bytes': len(by_bytes)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240, env={**os.environ, "MLFLOW_TRACKING_URI": server})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    got = pd.DataFrame(res["by_path"])
    assert list(got.columns) == registry.OUTPUT_COLUMNS
    assert got["image"].tolist() == [0] * 4 + [1] * 4
    assert set(got["label"]) == {"Norfolk terrier < terrier < dog"} and set(got["wnid"]) == {"n02094114"}
    assert res["n_bytes"] == 0  # thresh .99 as a param: nothing left
    # The same rows as the model run in this process.
    local = registry.load_pyfunc(f"models:/{NAME}@champion").predict(None, pd.DataFrame({"path": paths}))
    pd.testing.assert_frame_equal(got, local, check_dtype=False, atol=1e-4)


def test_evaluation_is_logged_into_the_training_run(server, logged):
    run_id, _ = logged
    cfg = load_config("demo", [f"mlflow.tracking_uri={server}"])
    gt = M.GroundTruth(["a", "b"], ["n02094114", "n02121808"], ["Norfolk terrier", "cat"],
                       np.array([[0, 0, 10, 10], [5, 5, 20, 20.]]), np.array([0, 1]), np.array([0, 1]))
    preds = M.Predictions(np.array([[0, 0, 10, 10.]]), np.array([0.9]), np.array([0]), np.array([0]))
    res = M.ap50(gt, preds)
    split = {"n02094114": "seen", "n02121808": "unseen"}
    summary = M.summarize(res.ap50, gt.class_ids, split)
    drawn = [("a", plots.draw_detections(noise_image(32, 0), preds.boxes, preds.scores, ["Norfolk terrier < terrier < dog"]))]
    assert log_evaluation(cfg.mlflow, summary, M.table_to_csv(M.per_class_table(gt, res, split)), plots.pr_curves(res, gt.class_names),
                          drawn, run_id, None) == run_id
    client = mlflow.MlflowClient(server)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["map50_all"] == pytest.approx(0.5)
    assert metrics["map50_seen"] == pytest.approx(1.0) and metrics["map50_unseen"] == 0.0
    files = {f.path for f in client.list_artifacts(run_id, "eval")}
    assert {"eval/per_class.csv", "eval/pr_curves.png", "eval/images"} <= files
    csv_text = io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/eval/per_class.csv"))
    assert pd.read_csv(csv_text)["ap50"].tolist() == [1.0, 0.0]
    # Without a run id, a new evaluation run linked to the training run.
    other = log_evaluation(cfg.mlflow, summary, "class\n", plots.pr_curves(res, gt.class_names), [], None, run_id)
    assert other != run_id and client.get_run(other).data.tags["y9k.train_run_id"] == run_id


def test_compare_and_history_show_every_version_and_champion_move(server, logged, capsys, monkeypatch, tmp_path):
    from PIL import Image

    from pipelines import versions

    if len(registry.champion_moves(NAME)) < 4:  # run alone: make the moves the test above makes
        test_versions_aliases_promotion_and_rollback(server, logged, capsys, monkeypatch)
        capsys.readouterr()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    args = ["--set", f"mlflow.registered_model={NAME}"]
    moves = registry.champion_moves(NAME)
    # v1 first; v3 by the metric margin; rollback to v1; manual promote of v3.
    assert [(m["version"], m["from"], m["trigger"]) for m in moves[-4:]] == [
        ("1", None, "promote"), ("3", "1", "promote"), ("1", "3", "y9k registry rollback"),
        ("3", "1", "y9k registry promote")]
    assert "0.4000 > champion 0.3000 + margin 0.01" in moves[-3]["reason"]
    assert [m["at"] for m in moves] == sorted(m["at"] for m in moves)

    assert main(["registry", "history", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(moves)
    assert "version 1 (first champion)" in lines[0] and "no champion yet" in lines[0]
    assert "version 3 (from version 1)" in lines[-1] and "via y9k registry promote" in lines[-1]

    out = tmp_path / "cmp.png"
    assert main(["registry", "compare", "--metric", "map50_all", "--metric", "map50_unseen", "--out", str(out),
                 *args]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:4] == ["version", "registered", "(UTC)", "map50_all"]
    rows = {ln.split()[0]: ln for ln in text[1:-1]}
    assert set(rows) >= {"1", "2", "3"}
    assert "0.3000" in rows["1"] and "0.1500" in rows["1"] and "f00d" not in rows["1"]  # that is a det-val tag
    assert "abc123" in rows["2"]
    assert rows["2"].rstrip().endswith("-")  # never champion
    assert rows["1"].count("->") == 2 and rows["3"].count("->") == 2  # champion twice each
    assert rows["3"].rstrip().endswith("-> now")
    assert text[-1] == f"plot: {out}"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (900, 450)

    # What the register stage logs into the latest version's run.
    cmp = versions.log_comparison(NAME, logged[0], server)
    assert [p.version for p in cmp["periods"]][-4:] == ["1", "3", "1", "3"]
    files = {f.path for f in mlflow.MlflowClient(server).list_artifacts(logged[0], "registry")}
    assert files == {versions.PLOT_FILE, versions.TABLE_FILE}
