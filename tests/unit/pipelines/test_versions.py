"""Champion moves, `registry history` and `registry compare` on the demo's own kind of store
(sqlite, where MLflow returns versions as ints: rollback must still find the previous champion)."""

from __future__ import annotations

import io
import time

import mlflow
import pytest
from PIL import Image

from pipelines import registry, versions

NAME = "y9k-versions-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three versions: v1 first champion, v2 not better by the margin, v3 better; then a rollback
    to v1 and a manual promote of v3 again."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = registry._client(uri)
    exp = client.create_experiment("versions", artifact_location=str(tmp_path_factory.mktemp("artifacts")))
    run_id = client.create_run(exp).info.run_id
    client.create_registered_model(NAME)
    for k, value in enumerate([0.30, 0.305, 0.40], 1):
        tags = registry.provenance_tags(fingerprints={"ingest": f"fp{k}"}, tree_hash="abc",
                                        metrics={"map50_all": value, "map50_unseen": value / 2})
        mv = client.create_model_version(NAME, f"runs:/{run_id}/model", run_id, tags=tags)
        registry.promote_if_better(NAME, mv.version, "map50_all", 0.01, tracking_uri=uri, trigger="register stage")
        time.sleep(0.01)  # distinct move times
    assert registry.rollback(NAME, tracking_uri=uri) == "1"
    assert registry.promote_if_better(NAME, "3", "map50_all", 0.01, tracking_uri=uri,
                                      trigger="y9k registry promote").promoted
    return uri, run_id


def test_moves_record_who_when_from_and_why(store):
    uri, _ = store
    moves = registry.champion_moves(NAME, uri)
    assert [(m["version"], m["from"], m["trigger"]) for m in moves] == [
        ("1", None, "register stage"), ("3", "1", "register stage"), ("1", "3", "rollback"),
        ("3", "1", "y9k registry promote")]
    assert moves[1]["reason"] == "map50_all 0.4000 > champion 0.3000 + margin 0.01"
    assert moves[2]["reason"] == "rolled back to version 1 (the previous champion)"
    assert all(m["by"] for m in moves) and [m["at"] for m in moves] == sorted(m["at"] for m in moves)
    text = versions.history(NAME, uri).splitlines()
    assert len(text) == 4 and text[2].endswith("version 1 (from version 3)  by " + moves[2]["by"]
                                              + " via rollback: rolled back to version 1 (the previous champion)")


def test_compare_table_periods_and_plot(store):
    uri, run_id = store
    cmp = versions.compare(NAME, uri, ["map50_all", "map50_unseen"])
    assert [(p.version, p.end is None) for p in cmp["periods"]] == [("1", False), ("3", False), ("1", False),
                                                                    ("3", True)]
    lines = versions.table(cmp).splitlines()
    assert lines[0].split() == ["version", "registered", "(UTC)", "map50_all", "map50_unseen", "data", "fingerprint",
                                "tree", "hash", "aliases", "champion"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert "0.3050" in rows["2"] and "0.1525" in rows["2"] and "fp2" in rows["2"] and rows["2"].endswith("-")
    assert rows["1"].count("->") == 2 and rows["3"].endswith("-> now") and "  champion  " in rows["3"]
    png = versions.png_bytes(versions.plot(cmp))
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (900, 450)
    versions.log_comparison(NAME, run_id, uri)
    assert {f.path for f in registry._client(uri).list_artifacts(run_id, "registry")} == {
        versions.PLOT_FILE, versions.TABLE_FILE}
    logged = open(mlflow.MlflowClient(uri).download_artifacts(run_id, versions.TABLE_FILE)).read()
    # The register stage's table: the default metrics, then the champion moves.
    assert logged.split()[3:6] == list(versions.DEFAULT_METRICS)
    assert logged.split("champion moves:\n")[1].strip() == versions.history(NAME, uri)
