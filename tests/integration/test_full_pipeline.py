"""The whole pipeline as users run it: `ray job submit ... python pipelines/full.py` to a real
`ray start --head` cluster logging into a real `mlflow server`, then the stage commands, `y9k run`
and scheduled retraining on the same outputs; and `full.py` with every stage on S3 (moto).

Everything runs at a tiny scale (a handful of generated images, a few training steps at 64 px)
so that the stages' wiring, caching and registry behaviour are what is tested, not accuracy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    free_port,
    ray_head_command,
    ray_logs_tail,
    stop_group,
    wait_for_http,
    wait_for_line,
)

REPO = Path(__file__).resolve().parents[2]
MODEL = "y9k-e2e"
TINY = [
    "sample_data.scale=tiny", "data.max_side=128", "data.shard_mb=4",
    "anchors.input_size=64", "anchors.k=3", "anchors.k_max=5", "anchors.restarts=2",
    "train.max_steps=4", "train.batch_size=4", "train.steps=[2, 3]", "train.burn_in=1",
    "train.input_size=64", "train.multiscale_min=64", "train.multiscale_max=96", "train.checkpoint_every=2",
    "train.log_every=2", "eval.input_size=64", "eval.batch_size=4", "eval.draw_images=2",
    f"mlflow.registered_model={MODEL}", "mlflow.experiment=y9k-e2e",
]


def _sets(root: Path | str, *extra: str) -> list[str]:
    return [a for s in [*TINY, f"storage.root={root}", *extra] for a in ("--set", s)]


def _args(root: Path | str, tracking_uri: str, *extra: str) -> list[str]:
    return _sets(root, f"mlflow.tracking_uri={tracking_uri}", *extra)


def _full(args: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(REPO / "pipelines" / "full.py"), *args], capture_output=True,
                         text=True, timeout=timeout, env=env or _env())
    return res


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI",
                                                                 "MLFLOW_REGISTRY_URI")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _statuses(stdout: str) -> dict[str, str]:
    """stage -> status from the report table printed at the end."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("sample_data", "wordtree", "ingest", "anchors", "train", "evaluate",
                                            "register"):
            out[parts[0]] = parts[1]
    return out


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def ray_head(tmp_path: Path):
    """A real `ray start --head` on non-default ports, stopped through its own --block process."""
    # No drain on SIGTERM: it waits (up to 30 s) for Ray Serve replicas to move, and there are none.
    env = _env(RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ray_bin = Path(sys.executable).with_name("ray")
    log_path = tmp_path / "ray-head.log"
    # A second try only when `ray start` itself times out starting its node ("GCS overloaded",
    # seen once in CI on 2 cores while an MLflow server started) or a port was taken between
    # free_port and Ray's bind: the test is of the job, not of Ray's start-up under load. Any other
    # failure fails the test, with the ends of Ray's own logs (the temp dir goes with the failure).
    for attempt in (1, 2):
        # Ray's unix socket paths must stay under 108 bytes: pytest's tmp_path is too deep. 3 logical
        # CPUs on this 2-core machine: the training worker and each of the two data streams hold one.
        temp_dir = tempfile.mkdtemp(prefix="y9k-ray-", dir="/tmp")
        cmd, address = ray_head_command(ray_bin, temp_dir, num_cpus=3)
        log = open(log_path, "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_for_http(f"{address}/api/version", proc, log_path, "ray start --head", timeout=120)
            # The dashboard can answer before the node is up, and the node can still fail.
            wait_for_line(log_path, "Ray runtime started.", proc, "ray start --head", timeout=120)
            break
        except RuntimeError as e:
            ray_logs = ray_logs_tail(temp_dir)
            stop_group(proc, grace=10)
            log.close()
            shutil.rmtree(temp_dir, ignore_errors=True)
            head_log = log_path.read_text(errors="replace")
            port_taken = "already occupied" in head_log or "address already in use" in ray_logs.lower()
            if attempt == 2 or not ("timed out during startup" in head_log or port_taken):
                raise RuntimeError(f"{e}\n{ray_logs}") from None
    try:
        yield address, env, Path(temp_dir)
    finally:
        stop_group(proc, grace=10)  # `ray start --block` stops the processes it started
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_run() -> dict:
    """What the job-submit test leaves for the later tests of this module (its storage root and
    tracking URI), so that they look at the same pipeline run instead of training again."""
    return {}


def _shared(shared_run: dict) -> dict:
    if "root" not in shared_run:
        pytest.skip("needs test_job_submit_then_commands_cache_and_retrain (this module) to have run and passed")
    return shared_run


@pytest.mark.slow
def test_job_submit_then_commands_cache_and_retrain(tmp_path, mlflow_server, monkeypatch, capsys, caplog,
                                                    shared_run, recwarn):
    """One pipeline run shared by every check of it: `ray job submit ... python pipelines/full.py`
    to a real `ray start --head` logging into a real `mlflow server`; then on the same root the
    stage commands pick what the job picked, `y9k run` finds everything cached, the plan of a
    changed config, and scheduled retraining without and with new data."""
    root = tmp_path / "root"
    with ray_head(tmp_path) as (address, head_env, ray_temp):
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin), "job", "submit", "--address", address, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps({
                   "env_vars": {"MLFLOW_TRACKING_URI": mlflow_server, "Y9K_NLTK_DATA": str(REPO / "nltk_data")},
                   "excludes": [".venv", "nltk_data", "y9k-data", "mlruns", "mlflow.db"]}),
               "--", "python", "pipelines/full.py", "--config", "pipelines/configs/demo.yaml", *_sets(root)]
        # The dashboard answers before its job agent is up; that refusal creates no job, so retry it.
        deadline = time.monotonic() + 180
        while True:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200,
                                 env={**head_env, "MLFLOW_TRACKING_URI": mlflow_server}, cwd=REPO)
            out = res.stdout + res.stderr
            if "No available agent to submit job" not in out or time.monotonic() > deadline:
                break
            time.sleep(3)
        agent_logs = "".join(p.read_text(errors="replace")[-3000:]
                             for p in ray_temp.glob("session_latest/logs/dashboard_agent*.log"))
        assert res.returncode == 0, out[-3000:] + "\n--- dashboard agent log ---\n" + agent_logs
        from ray.job_submission import JobStatus, JobSubmissionClient

        jobs = JobSubmissionClient(address).list_jobs()
        assert [j.status for j in jobs] == [JobStatus.SUCCEEDED], out[-4000:]
    assert set(_statuses(res.stdout).values()) == {"ran"}, res.stdout
    # Training said what it was doing on the driver's console: a line per train.log_every (2) steps.
    steps = [ln.split("train: step ", 1)[1].split()[0] for ln in out.splitlines() if "train: step " in ln]
    assert steps == ["2/4", "4/4"], out[-3000:]
    assert f"registered model: {MODEL} version 1 (now champion: no champion yet)" in out
    assert f"open {mlflow_server}" in out
    client = _client(mlflow_server)
    v1 = client.get_model_version_by_alias(MODEL, "champion")
    assert str(v1.version) == "1" and str(client.get_model_version_by_alias(MODEL, "candidate").version) == "1"
    for tag in ("tree_hash", "git_commit", "data.ingest.fingerprint", "metric.map50_all", "train_run_id"):
        assert v1.tags.get(tag), tag
    for path in ("wordtree/tree.parquet", "wordtree/det_classes.tsv", "anchors/anchors.json", "anchors/curve.png"):
        assert (root / path).exists(), path

    # The rest runs in this process on one local Ray (each command in a new process would start
    # Ray and import torch and MLflow again), as `y9k` runs them: the stage commands on the same
    # root and config pick the job's directories (pipelines.layout): ingest finds every source up
    # to date, anchors the same shards (the training splits, never evaluation data), and training
    # the same splits as the job's training stage.
    import ray

    from pipelines.cli import main
    from pipelines.config import load_config
    from pipelines.train.data import cpus_needed

    cores = os.cpu_count()
    train_cpus = cpus_needed(load_config("demo", [s for s in _sets(root) if s != "--set"]).train)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if ray.is_initialized():  # another test's instance: the commands start their own, sized for training
        ray.shutdown()
    caplog.set_level(logging.INFO)
    try:
        capsys.readouterr()
        # Ingest starts Ray for itself, never sized from the train settings (more training
        # workers than cores here: ingest does not hash them, so its sources stay up to date).
        assert main(["ingest", *_sets(root, f"train.num_workers={cores + 1}")]) == 0
        assert "4 sources (4 up to date)" in caplog.text, caplog.text[-3000:]
        assert ray.cluster_resources()["CPU"] == cores
        assert main(["anchors", *_sets(root)]) == 0
        assert "(up to date, skipped)" in capsys.readouterr().out
        saved = json.loads((root / "anchors" / "anchors.json").read_text())
        assert saved["shards"] == [str(root / "shards/coco-train")]

        # Same inputs and config: every stage is cached, nothing new is registered. The job
        # trains, so the process's local Ray grows to what training holds (3 CPUs on 2 cores).
        capsys.readouterr()
        assert main(["run", *_sets(root)]) == 0
        again = capsys.readouterr().out
        assert set(_statuses(again).values()) == {"cached"}, again
        assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
        assert ray.cluster_resources()["CPU"] == max(cores, train_cpus)

        job_train = re.search(r"train: \w+ mode on .*", out)
        assert job_train, out[-3000:]
        # `y9k train --dry-run` says the same before anything is trained, and where it would start.
        assert main(["train", *_sets(root), "--dry-run"]) == 0
        plan = capsys.readouterr().out
        assert re.search(r"train: \w+ mode on .*", plan).group(0) == job_train.group(0), plan
        assert "starts at step 0 of 4" in plan and "anchors: " + str(root / "anchors" / "anchors.json") in plan, plan
        caplog.clear()
        assert main(["train", *_sets(root), "--stop-after", "1"]) == 0
        assert re.search(r"train: \w+ mode on .*", caplog.text).group(0) == job_train.group(0)
        assert "imagenet_det-val" not in job_train.group(0) and "coco-val" not in job_train.group(0)
        # Read from Ray Train's own record of the run directory's checkpoints.
        assert main(["train", *_sets(root), "--dry-run"]) == 0
        assert "resumes from the checkpoint of step 1 of 4" in capsys.readouterr().out

        # The plan of a changed config: training and everything after it would run again.
        assert main(["run", *_sets(root, "train.lr=0.002"), "--dry-run"]) == 0
        st = _statuses(capsys.readouterr().out)
        assert st["ingest"] == "would-skip" and st["train"] == "would-run", st

        # Scheduled retrain with no new data: nothing is trained, and it says why.
        assert main(["run", *_sets(root), "--retrain"]) == 0
        same = capsys.readouterr().out
        assert _statuses(same)["train"] == "skipped" and "no new data since champion version 1" in same

        # New classification images arrive: the retrain warm-starts from the champion and registers v2.
        extra = tmp_path / "extra"
        from pipelines.sample_data import generate

        generate(str(extra), seed=7, scale="tiny")
        added = 0
        for src in (extra / "imagenet" / "train").rglob("*.JPEG"):
            dst = root / "sample" / "imagenet" / "train" / src.parent.name / f"new_{src.name}"
            shutil.copy(src, dst)
            added += 1
        assert added > 0
        caplog.clear()
        assert main(["run", *_sets(root), "--retrain"]) == 0
        grown = capsys.readouterr().out
    finally:
        ray.shutdown()
    st = _statuses(grown)
    assert st["ingest"] == "ran" and st["train"] == "ran" and st["register"] == "ran", grown
    assert "warm start from models:/" in caplog.text
    # Evaluation's actor pool started at one actor (3 CPUs, 6 images in one block): Ray Data did
    # not warn that the pool was larger than its input.
    pool_warnings = [str(w.message) for w in recwarn if "minimum number of concurrent actors" in str(w.message)]
    assert not pool_warnings, pool_warnings
    v2 = client.get_model_version(MODEL, "2")
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == "2"
    champ = str(client.get_model_version_by_alias(MODEL, "champion").version)
    better = float(v2.tags["metric.map50_all"]) > float(v1.tags["metric.map50_all"])
    assert champ == ("2" if better else "1")
    assert ("now champion" if better else "champion unchanged") in grown
    shared_run.update(root=root, uri=mlflow_server)


@pytest.mark.slow
def test_pipeline_with_all_data_on_s3(tmp_path):
    """Every stage reads and writes s3:// on an S3 API server on loopback (moto), credentials from
    the environment; the job succeeds, registers a model, and no key reaches the logs."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        secret = "s3cr3t-never-logged"
        env = _env(AWS_ACCESS_KEY_ID="AKIATESTKEY", AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1",
                   AWS_ENDPOINT_URL=endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIATESTKEY",
                          aws_secret_access_key=secret, region_name="us-east-1")
        s3.create_bucket(Bucket="pipeline")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        res = _full(_args("s3://pipeline/e2e", uri, "mlflow.registered_model=y9k-s3"), env=env)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert "mlflow ui --backend-store-uri" in res.stdout  # a sqlite store: how to browse it
        assert secret not in out and "AKIATESTKEY" not in out
        # The local instance has no dashboard: Ray Train's placement-group cleaner must not warn
        # about the State API every second (pipelines/worker_logs.py).
        assert "Failed to query Ray Train Controller" not in out, out[-3000:]
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="pipeline")
                for o in page.get("Contents", [])]
        for prefix in ("e2e/sample/coco/", "e2e/wordtree/tree.parquet", "e2e/shards/coco-train/",
                       "e2e/anchors/anchors.json", "e2e/train/", "e2e/eval/", "e2e/_pipeline/register/manifest.json"):
            assert any(k.startswith(prefix) for k in keys), prefix
        version = _client(uri).get_model_version_by_alias("y9k-s3", "champion")
        assert str(version.version) == "1"
    finally:
        server.stop()


@pytest.mark.slow
def test_runs_carry_dataset_lineage_and_versions_link_to_them(shared_run, tmp_path):
    """Each training run lists the shard directories it read (context training) and the DET val
    shards it was evaluated on (context evaluation), digest = the ingest manifest's fingerprint;
    MLflow's own dataset search finds the runs; the register stage logged the version comparison."""
    from pipelines import manifest, versions

    _shared(shared_run)
    root, client = shared_run["root"], _client(shared_run["uri"])
    v1, v2 = (client.get_model_version(MODEL, v) for v in ("1", "2"))
    run = client.get_run(v2.run_id)  # the latest training: the shards as they are now
    assert run.info.run_name.startswith("train-") and v2.tags["train_run_id"] == v2.run_id
    inputs = {(d.dataset.name, d.tags[0].value): d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {("coco-train", "training"), ("imagenet-train", "training"),
                           ("imagenet_det-val", "evaluation")}
    for (name, _), ds in inputs.items():
        m = manifest.read_manifest(str(root / "shards" / name))
        assert ds.digest == m.inputs_fingerprint and json.loads(ds.profile) == {"num_rows": m.counts["images_accepted"]}
        assert json.loads(ds.source) == {"uri": str(root / "shards" / name)}
        assert [c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]][:4] == ["image_id", "dataset", "split", "kind"]
    # Version 1 was trained before the new images: another imagenet-train digest, the same coco-train.
    digests1 = {d.dataset.name: d.dataset.digest for d in client.get_run(v1.run_id).inputs.dataset_inputs}
    assert digests1["coco-train"] == inputs[("coco-train", "training")].digest
    assert digests1["imagenet-train"] != inputs[("imagenet-train", "training")].digest
    # MLflow's own search by dataset finds both versions' runs (and any other run that read it,
    # such as the `y9k train --stop-after 1` above).
    found = client.search_runs([run.info.experiment_id], filter_string="dataset.name = 'imagenet-train'")
    assert {v1.run_id, v2.run_id} <= {r.info.run_id for r in found}
    assert all("imagenet-train" in {d.dataset.name for d in r.inputs.dataset_inputs} for r in found)
    # The comparison of every version, logged into the latest version's run.
    table = Path(client.download_artifacts(v2.run_id, versions.TABLE_FILE, str(tmp_path))).read_text()
    rows = {ln.split()[0]: ln for ln in table.splitlines()[1:3]}
    assert set(rows) == {"1", "2"} and v1.tags["data.ingest.fingerprint"] in rows["1"]
    assert "version 1 (first champion)" in table
    assert versions.PLOT_FILE in {f.path for f in client.list_artifacts(v2.run_id, "registry")}


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_detections(shared_run, tmp_path):
    """`mlflow models serve` of a registered version (env-manager local) on a loopback port: the
    scoring server validates the request against the signature and answers with the rows the
    model gives in this process."""
    import base64
    import urllib.request

    import mlflow
    import pandas as pd
    import pyarrow.parquet as pq

    _shared(shared_run)
    part = sorted((shared_run["root"] / "shards" / "imagenet_det-val").glob("*.parquet"))[0]
    image = pq.read_table(part, columns=["image"])["image"][0].as_py()
    port = free_port()
    # The venv's bin on PATH, as for a user in an activated venv: the server execs `uvicorn` from it.
    env = _env(MLFLOW_TRACKING_URI=shared_run["uri"],
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
                                 f"models:/{MODEL}/2", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/ping", proc, log_path, "mlflow models serve", timeout=120)
            body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()]]},
                    "params": {"thresh": 0.01}}
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                served = pd.DataFrame(json.load(r)["predictions"])
            # A request that breaks the signature is refused with MLflow's message, not a traceback.
            bad = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"dataframe_split": {"columns": ["image"], "data": [[3]]}}
                                                         ).encode(), headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(bad, timeout=60)
            assert refused.value.code == 400
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    from pipelines.registry import using_tracking_uri

    with using_tracking_uri(shared_run["uri"]):
        local = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(pd.DataFrame({"image": [image]}),
                                                                        params={"thresh": 0.01})
    assert len(served) > 0 and list(served.columns) == list(local.columns)
    pd.testing.assert_frame_equal(served, local.reset_index(drop=True), check_dtype=False, atol=1e-4)


@pytest.mark.slow
def test_mlflow_ui_shows_charts_datasets_aliases_and_comparison(shared_run, tmp_path):
    """The pipeline's MLflow store through the MLflow UI (a React app) in headless Chromium: what a
    person sees, checked on the rendered pages; screenshots are kept in this test's temp folder.
    The UI is the `mlflow server` (loopback, sqlite store) the pipeline run above logged into."""
    from pipelines import versions
    from tests.integration.browser import Chromium, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    _shared(shared_run)
    client = _client(shared_run["uri"])
    v1 = client.get_model_version(MODEL, "1")
    exp_id = client.get_run(v1.run_id).info.experiment_id
    latest = client.get_model_version(MODEL, "2")
    ui = shared_run["uri"]
    with Chromium(tmp_path) as page:
        run_url = f"{ui}/#/experiments/{exp_id}/runs/{v1.run_id}"
        # The run's overview lists its datasets: the first one inline, the others behind "+2".
        page.goto(run_url)
        page.wait_for_text(["Datasets", "coco-train", "Training", "+2"], timeout=60)
        page.click_text("+2")
        page.wait_for_text(["imagenet-train", "imagenet_det-val", "Evaluation"])
        page.screenshot(tmp_path / "run-datasets.png")
        # Its charts: the training loss and the evaluation mAP, drawn (plotly traces).
        page.goto(f"{run_url}/model-metrics")
        for metric in ("loss_total", "map50_all"):
            page.type_into("input[placeholder='Search metric charts']", metric)
            # One chart left by the search, titled with the metric, drawn (an svg wider than an icon:
            # a line chart for the loss over steps, a bar for the single mAP value).
            page.wait_for(f"document.body.innerText.includes('Model metrics\\n(1)\\n{metric}') && "
                          "[...document.querySelectorAll('svg')].some(s => s.getBoundingClientRect().width > 150 "
                          "&& s.querySelectorAll('path').length > 2)")
            page.screenshot(tmp_path / f"chart-{metric}.png")
        # The registered model with its versions and champion moves, and each alias on its version's page.
        page.goto(f"{ui}/#/models/{MODEL}")
        page.wait_for_text(["Version 1", "Version 2", "@ candidate", "champion_move.0001"])
        page.screenshot(tmp_path / "model.png")
        for alias in ("champion", "candidate"):
            version = client.get_model_version_by_alias(MODEL, alias).version
            page.goto(f"{ui}/#/models/{MODEL}/versions/{version}")
            page.wait_for_text([f"Version {version}", "Aliases", f"@ {alias}"])
            page.screenshot(tmp_path / f"version-{alias}.png")
        # The version comparison logged by the register stage, shown as an image.
        page.goto(f"{ui}/#/experiments/{exp_id}/runs/{latest.run_id}/artifacts/{versions.PLOT_FILE}")
        page.wait_for("[...document.images].some(i => i.complete && i.naturalWidth == 900)")
        page.screenshot(tmp_path / "comparison.png")
    for name in ("run-datasets", "chart-loss_total", "chart-map50_all", "model", "version-champion",
                 "version-candidate", "comparison"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name
