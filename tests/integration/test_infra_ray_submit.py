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

from tests.integration.conftest import ray_head_command, ray_logs_tail
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
    dest.mkdir(parents=True)
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


def api(address: str, path: str, token: str | None, body: dict | None = None) -> tuple[int, object]:
    """GET (or POST `body` to) the dashboard's REST API, with `Authorization: Bearer <token>`."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{address}{path}", data=data, headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_for_dashboard(address: str, token: str, proc: subprocess.Popen, log_path: Path,
                       temp_dir: str) -> None:
    """Poll the dashboard (which wants the token even for /api/version) until it answers."""
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (f"ray start --head exited: {log_path.read_text()[-2000:]}\n"
                                     f"{ray_logs_tail(temp_dir)}")
        try:
            if api(address, "/api/version", token)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, (f"no dashboard on {address}: {log_path.read_text()[-2000:]}\n"
                                             f"{ray_logs_tail(temp_dir)}")
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
    temp_dir = tempfile.mkdtemp(prefix="y9k-rt-", dir="/tmp")  # Ray's socket paths: < 108 bytes
    cmd, address = ray_head_command(VENV_BIN / "ray", temp_dir, num_cpus=1)
    log_path = tmp / "ray-head.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_dashboard(address, token, proc, log_path, temp_dir)
        # The dashboard answers before its job agent is up (KubeRay waits for a ready cluster before
        # it starts a submitter): wait until the agent takes a job.
        deadline = time.monotonic() + 90
        while True:
            status, answer = api(address, "/api/jobs/", token, {"entrypoint": "true"})
            if status == 200 or time.monotonic() > deadline:
                break
            assert "No available agent" in str(answer), (status, answer)
            time.sleep(0.5)
        assert status == 200, answer
        yield {"address": address, "token": token, "secrets": store, "base_env": base, "tmp": tmp}
    finally:
        stop_head(proc, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def head_processes(session_id: int, temp_dir: str) -> list[int]:
    """This head's processes: those in the session `ray start` leads, and any that left it but
    name the head's own temp dir (Ray's workers and agents carry its session path)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getsid(int(d.name)) == session_id or temp_dir in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_head(proc: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM to this head's processes by PID, SIGKILL to what is left after 2 s (never `ray stop`,
    which stops every Ray on the machine)."""
    pids = head_processes(proc.pid, temp_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (proc.poll() is None or any(running(p) for p in pids if p != proc.pid)):
        time.sleep(0.1)
    for pid in head_processes(proc.pid, temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


def final_status(address: str, token: str, submission_id: str) -> dict:
    status, job = api(address, f"/api/jobs/{submission_id}", token)
    assert status == 200, job
    return job


def cronjob_submitter(head: dict) -> tuple[list[str], dict[str, str]]:
    """The CronJob's container command, as written, after Kubernetes' expansion, and its env."""
    cron = load_doc("k8s/cronjob-ray-submit.yaml")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = resolve_env(container.get("env", []), head["secrets"])
    argv = container_script(container, env)
    assert argv[:2] == ["/bin/bash", "-c"] and HEAD_SERVICE in argv[2]
    workdir = image_workdir(head["tmp"] / "cron-workdir")
    script = with_dry_run(argv[2].replace(HEAD_SERVICE, head["address"]))
    assert workdir in script
    return [*argv[:2], script.replace(workdir, str(head["tmp"] / "cron-workdir"))], env


def rayjob_submitter(head: dict, job_id: str) -> tuple[list[str], dict[str, str]]:
    """The RayJob's submitter as KubeRay runs it: its command, and the env it gives the container."""
    rayjob = load_doc("kuberay/rayjob.yaml")
    spec = rayjob["spec"]
    (container,) = spec["submitterPodTemplate"]["spec"]["containers"]
    assert not container.get("command"), "KubeRay builds the submitter's command only when none is set"
    workdir = image_workdir(head["tmp"] / "rayjob-workdir")
    script = with_dry_run(kuberay_submit_script(spec, head["address"], job_id))
    assert workdir in script
    script = script.replace(workdir, str(head["tmp"] / "rayjob-workdir"))
    env_list = with_env(container.get("env"), kuberay_auth_env(rayjob["metadata"]["name"], spec["rayClusterSpec"]))
    return ["/bin/bash", "-ce", "--", script], resolve_env(env_list, head["secrets"])


@pytest.fixture(scope="module")
def submitted(token_head) -> dict[str, tuple[subprocess.CompletedProcess, dict[str, str]]]:
    """Both submitters, run at the same time (as a CronJob and a RayJob may be)."""
    job_id = f"y9k-full-{secrets.token_hex(4)}"
    runs = {"cronjob": cronjob_submitter(token_head), "rayjob": rayjob_submitter(token_head, job_id)}
    procs = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env={**token_head["base_env"], **env})
             for name, (argv, env) in runs.items()}
    out = {name: (p.communicate(timeout=300)[0], p.returncode) for name, p in procs.items()}
    return {"cronjob": out["cronjob"], "rayjob": out["rayjob"], "rayjob_id": job_id,
            "envs": {name: env for name, (_, env) in runs.items()}}


def test_the_dashboard_refuses_requests_without_the_token(token_head) -> None:
    address = token_head["address"]
    assert api(address, "/api/jobs/", None)[0] == 401
    assert api(address, "/api/jobs/", "0" * 64)[0] in (401, 403)
    assert api(address, "/api/jobs/", token_head["token"])[0] == 200


def test_cronjob_submitter_runs_as_written_and_its_job_succeeds(token_head, submitted) -> None:
    out, rc = submitted["cronjob"]
    assert submitted["envs"]["cronjob"]["RAY_AUTH_MODE"] == "token"
    assert rc == 0, out[-3000:]
    (submission_id,) = set(re.findall(r"(y9k-retrain-\d{8}T\d{6}Z)", out))
    job = final_status(token_head["address"], token_head["token"], submission_id)
    assert job["status"] == "SUCCEEDED", job
    assert job["entrypoint"].endswith("--retrain --dry-run")
    assert "would-run" in out  # the dry run's plan, printed by the job's driver


def test_rayjob_submitter_built_by_kuberay_runs_and_its_job_succeeds(token_head, submitted) -> None:
    out, rc = submitted["rayjob"]
    assert submitted["envs"]["rayjob"]["RAY_AUTH_MODE"] == "token"
    assert rc == 0, out[-3000:]
    # What the operator's status poll reads, authenticated with the Secret authOptions names.
    job = final_status(token_head["address"], token_head["token"], submitted["rayjob_id"])
    assert job["status"] == "SUCCEEDED", job
    assert "--retrain" not in job["entrypoint"] and job["entrypoint"].endswith("--dry-run")
    assert "would-run" in out
