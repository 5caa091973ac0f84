"""infra/'s job submitters run for real against a local `ray start --head` with token auth on.

The head gets the env a KubeRay head container of `kuberay/raycluster.yaml` gets (its token from
the Secret that `authOptions` names); the Secret itself is a fresh random token. Then:

- the submitter container of `k8s/cronjob-ray-submit.yaml` runs its command and args exactly as
  written, with its env resolved from the same Secret, after Kubernetes' `$(...)` expansion;
- the submitter of `kuberay/rayjob.yaml` runs the script KubeRay builds from the RayJob (its
  entrypoint and runtimeEnvYAML) with the env KubeRay gives it from `authOptions`;

and each job's final status is read back from the dashboard with the token, as the operator
does. Three things differ from the cluster, and only these: the head Service's address is the
local head's, the image's working directory is a copy of what the Dockerfile copies into it, and
the entrypoint gets `--dry-run` (the retraining itself needs the cluster's data and GPUs; the
dry run loads the config and plans every stage from the uploaded working directory).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tests.integration.infra_k8s import (
    INFRA,
    REPO,
    container_script,
    kuberay_auth_env,
    kuberay_submit_script,
    load_doc,
    resolve_env,
    with_env,
)

VENV_BIN = Path(sys.executable).parent
HEAD_SERVICE = "http://y9k-head-svc:8265"


def image_workdir(dest: Path) -> str:
    """Copy into `dest` what infra/docker/Dockerfile copies into its WORKDIR; return that WORKDIR."""
    text = (INFRA / "docker/Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", text, re.M)[-1]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for line in re.findall(r"^COPY\s+(?!--)(.+)$", text, re.M):
        *sources, target = line.split()
        for src in sources:
            to = dest / target if target != "./" else dest / src
            if (REPO / src).is_dir():
                shutil.copytree(REPO / src, to, ignore=ignore)
            else:
                shutil.copy2(REPO / src, to)
    return workdir


def with_dry_run(script: str) -> str:
    new, n = re.subn(r"(python pipelines/full\.py[^;\n]*?)(\s*;|\s*$)", r"\1 --dry-run\2", script, count=1)
    assert n == 1, f"no `python pipelines/full.py` entrypoint in {script!r}"
    return new


def api(address: str, path: str, token: str | None) -> tuple[int, object]:
    """GET the dashboard's REST API (with `Authorization: Bearer <token>` when given)."""
    req = urllib.request.Request(f"{address}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_for_dashboard(address: str, token: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Poll the dashboard (which wants the token even for /api/version) until it answers."""
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"ray start --head exited: {log_path.read_text()[-2000:]}"
        try:
            if api(address, "/api/version", token)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no dashboard on {address}: {log_path.read_text()[-2000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A `ray start --head` with the env of raycluster.yaml's head (token auth from authOptions),
    its Secret store, and the base env of a container (no token file in HOME)."""
    tmp = tmp_path_factory.mktemp("ray-token")
    cluster = load_doc("kuberay/raycluster.yaml")
    spec = cluster["spec"]
    token = secrets.token_hex(32)
    store = {spec["authOptions"]["secretName"]: {"auth_token": token}}
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    # The head's auth env exactly as KubeRay sets it; its MLflow env is not needed by a dry run.
    head_env = resolve_env([e for e in with_env(head.get("env"), kuberay_auth_env(cluster["metadata"]["name"], spec))
                            if e["name"].startswith("RAY_")], store)
    assert head_env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    home = tmp / "home"
    home.mkdir()
    base = {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(home), "PYTHONUNBUFFERED": "1",
            "AWS_EC2_METADATA_DISABLED": "true", "LANG": "C.UTF-8"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}, **base, **head_env}
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="y9k-rt-", dir="/tmp")  # Ray's socket paths: < 108 bytes
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
           "--dashboard-host=127.0.0.1", "--num-cpus=1", "--include-dashboard=true",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--min-worker-port={free_port()}",
           "--max-worker-port=0",
           *(f"--{name}={free_port()}" for name in (
               "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
               "metrics-export-port", "node-manager-port", "object-manager-port", "ray-client-server-port"))]
    log_path = tmp / "ray-head.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_for_dashboard(address, token, proc, log_path)
        # The dashboard answers before its job agent is up: wait until the agent takes a job.
        deadline = time.monotonic() + 90
        while True:
            res = subprocess.run([str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--", "true"],
                                 capture_output=True, text=True, env={**base, **head_env}, timeout=120)
            if res.returncode == 0 or time.monotonic() > deadline:
                break
            assert "No available agent" in res.stdout + res.stderr, res.stdout + res.stderr
            time.sleep(1)
        assert res.returncode == 0, res.stdout + res.stderr
        yield {"address": address, "token": token, "secrets": store, "base_env": base, "tmp": tmp}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def final_status(address: str, token: str, submission_id: str) -> dict:
    status, job = api(address, f"/api/jobs/{submission_id}", token)
    assert status == 200, job
    return job


def run_submitter(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_the_dashboard_refuses_requests_without_the_token(token_head) -> None:
    address = token_head["address"]
    assert api(address, "/api/jobs/", None)[0] == 401
    assert api(address, "/api/jobs/", "0" * 64)[0] in (401, 403)
    assert api(address, "/api/jobs/", token_head["token"])[0] == 200


def test_cronjob_submitter_runs_as_written_and_its_job_succeeds(token_head) -> None:
    cron = load_doc("k8s/cronjob-ray-submit.yaml")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = resolve_env(container.get("env", []), token_head["secrets"])
    argv = container_script(container, env)
    assert argv[:2] == ["/bin/bash", "-c"] and HEAD_SERVICE in argv[2]
    workdir = image_workdir(token_head["tmp"] / "cron-workdir")
    script = with_dry_run(argv[2].replace(HEAD_SERVICE, token_head["address"]))
    assert workdir in script
    script = script.replace(workdir, str(token_head["tmp"] / "cron-workdir"))
    res = run_submitter([*argv[:2], script], {**token_head["base_env"], **env})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    (submission_id,) = set(re.findall(r"(y9k-retrain-\d{8}T\d{6}Z)", out))
    job = final_status(token_head["address"], token_head["token"], submission_id)
    assert job["status"] == "SUCCEEDED", job
    assert job["entrypoint"].endswith("--retrain --dry-run")
    assert "would-run" in out  # the dry run's plan, printed by the job's driver


def test_rayjob_submitter_built_by_kuberay_runs_and_its_job_succeeds(token_head) -> None:
    rayjob = load_doc("kuberay/rayjob.yaml")
    spec = rayjob["spec"]
    (container,) = spec["submitterPodTemplate"]["spec"]["containers"]
    assert not container.get("command"), "KubeRay builds the submitter's command only when none is set"
    job_id = f"y9k-full-{secrets.token_hex(4)}"
    workdir = image_workdir(token_head["tmp"] / "rayjob-workdir")
    script = kuberay_submit_script(spec, token_head["address"], job_id)
    script = with_dry_run(script).replace(workdir, str(token_head["tmp"] / "rayjob-workdir"))
    env_list = with_env(container.get("env"), kuberay_auth_env(rayjob["metadata"]["name"], spec["rayClusterSpec"]))
    env = resolve_env(env_list, token_head["secrets"])
    assert env.get("RAY_AUTH_MODE") == "token"
    res = run_submitter(["/bin/bash", "-ce", "--", script], {**token_head["base_env"], **env})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    # What the operator's status poll reads, authenticated with the Secret authOptions names.
    job = final_status(token_head["address"], token_head["token"], job_id)
    assert job["status"] == "SUCCEEDED", job
    assert "would-run" in out
