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

from tests.integration.conftest import free_port, wait_for_http

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
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
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
    port, dash = free_port(), free_port()
    env = _env(RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ray_bin = Path(sys.executable).with_name("ray")
    # Ray's unix socket paths must stay under 108 bytes: pytest's tmp_path is too deep. 3 logical
    # CPUs on this 2-core machine: the training worker and each of the two data streams hold one.
    temp_dir = tempfile.mkdtemp(prefix="y9k-ray-", dir="/tmp")
    cmd = [str(ray_bin), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
           "--dashboard-host=127.0.0.1", "--num-cpus=3", "--include-dashboard=true",
           f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--min-worker-port={free_port()}", "--max-worker-port=0",
           # Every port explicit: a default one (agent 52365, metrics, ...) held by any other Ray on
           # this machine would keep the job agent from starting.
           *(f"--{name}={free_port()}" for name in (
               "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
               "metrics-export-port", "node-manager-port", "object-manager-port",
               "ray-client-server-port"))]
    log = open(tmp_path / "ray-head.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_for_http(f"{address}/api/version", proc, tmp_path / "ray-head.log", "ray start --head", timeout=120)
        yield address, env, Path(temp_dir)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_job_submit_then_commands_cache_and_retrain(tmp_path, mlflow_server, monkeypatch, capsys, caplog):
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

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if ray.is_initialized():  # another test's instance: the commands start their own, sized for training
        ray.shutdown()
    caplog.set_level(logging.INFO)
    try:
        capsys.readouterr()
        assert main(["ingest", *_sets(root)]) == 0
        assert "4 sources (4 up to date)" in caplog.text, caplog.text[-3000:]
        assert main(["anchors", *_sets(root)]) == 0
        assert "(up to date, skipped)" in capsys.readouterr().out
        saved = json.loads((root / "anchors" / "anchors.json").read_text())
        assert saved["shards"] == [str(root / "shards/coco-train")]
        job_train = re.search(r"train: \w+ mode on .*", out)
        assert job_train, out[-3000:]
        caplog.clear()
        assert main(["train", *_sets(root), "--stop-after", "1"]) == 0
        assert re.search(r"train: \w+ mode on .*", caplog.text).group(0) == job_train.group(0)
        assert "imagenet_det-val" not in job_train.group(0) and "coco-val" not in job_train.group(0)

        # Same inputs and config: every stage is cached, nothing new is registered.
        capsys.readouterr()
        assert main(["run", *_sets(root)]) == 0
        again = capsys.readouterr().out
        assert set(_statuses(again).values()) == {"cached"}, again
        assert len(client.search_model_versions(f"name='{MODEL}'")) == 1

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
    v2 = client.get_model_version(MODEL, "2")
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == "2"
    champ = str(client.get_model_version_by_alias(MODEL, "champion").version)
    better = float(v2.tags["metric.map50_all"]) > float(v1.tags["metric.map50_all"])
    assert champ == ("2" if better else "1")
    assert ("now champion" if better else "champion unchanged") in grown


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
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="pipeline")
                for o in page.get("Contents", [])]
        for prefix in ("e2e/sample/coco/", "e2e/wordtree/tree.parquet", "e2e/shards/coco-train/",
                       "e2e/anchors/anchors.json", "e2e/train/", "e2e/eval/", "e2e/_pipeline/register/manifest.json"):
            assert any(k.startswith(prefix) for k in keys), prefix
        version = _client(uri).get_model_version_by_alias("y9k-s3", "champion")
        assert str(version.version) == "1"
    finally:
        server.stop()
