"""The MLflow server of infra/mlflow/deployment.yaml, started here as the Deployment runs it.

Its command and args are the container's (only `--port` is a free one), its env is resolved from
Secrets holding fresh credentials, `basic_auth.ini` is written where the Secret volume would
mount it, and the stores are real: PostgreSQL from Debian's packages (started by this module in
a temporary directory, as the non-root user `postgres` when run as root) for both the backend
and the auth database, and the `s3://my-bucket` artifacts destination on a moto S3 server on
loopback (`MLFLOW_S3_ENDPOINT_URL` is the one variable added: AWS's S3 cannot be reached here).
Then the user the pipeline logs as is created the way infra/mlflow/README.md says, the register
stage's registry calls and `y9k registry` work with that user's credentials, and wrong ones get
one clear line.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, stop_group, wait_for_http
from tests.integration.infra_k8s import load_doc, resolve_env

MODEL = "y9k-infra-mlflow"
METRIC = "map50_all"


def postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def run_as() -> dict:
    """PostgreSQL refuses to run as root: drop to Debian's `postgres` user when we are root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as "
                    "(Debian's postgresql package creates it; .ci/run installs it)")
    return {"user": pw.pw_uid, "group": pw.pw_gid}


@pytest.fixture(scope="module")
def postgres():
    """A fresh PostgreSQL on a free loopback port; yields a function db_uri(user, password, db)."""
    import psycopg
    from psycopg import sql

    initdb, server = postgres_bin("initdb"), postgres_bin("postgres")
    if not (initdb and server):
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it)")
    ids = run_as()
    root = Path(tempfile.mkdtemp(prefix="y9k-pg-"))
    data = root / "data"
    if ids:
        os.chown(root, ids["user"], ids["group"])
    subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True, timeout=120, cwd=root,
                   **ids)
    port = free_port()
    log = open(root / "postgres.log", "wb")
    proc = subprocess.Popen([server, "-D", str(data), "-p", str(port), "-k", str(root),
                             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root, **ids)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "postgres.log").read_text()[-2000:]
            try:
                admin = psycopg.connect(host=str(root), port=port, user="postgres", dbname="postgres", autocommit=True)
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, (root / "postgres.log").read_text()[-2000:]
                time.sleep(0.3)
        password = secrets.token_hex(16)
        with admin.cursor() as cur:
            # As infra/mlflow/README.md: two databases owned by the user `mlflow`.
            cur.execute(sql.SQL("CREATE ROLE mlflow LOGIN PASSWORD {}").format(sql.Literal(password)))
            cur.execute("CREATE DATABASE mlflow OWNER mlflow")
            cur.execute("CREATE DATABASE mlflow_auth OWNER mlflow")
        admin.close()
        yield lambda db: f"postgresql://mlflow:{password}@127.0.0.1:{port}/{db}"
    finally:
        proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 on loopback with the bucket the deployment writes artifacts to."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"], aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    try:
        yield endpoint, keys, client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployed(postgres, s3, tmp_path_factory):
    """The Deployment's `mlflow server`, its admin, and the pipeline user's credentials."""
    endpoint, s3_keys, s3_client = s3
    tmp = tmp_path_factory.mktemp("mlflow-deployment")
    deployment, service = load_doc("mlflow/deployment.yaml"), load_doc("mlflow/deployment.yaml", 1)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    dest = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--artifacts-destination="))
    s3_client.create_bucket(Bucket=dest.removeprefix("s3://").split("/")[0])

    admin = {"username": "admin", "password": secrets.token_hex(12)}
    # The Secrets of infra/mlflow/README.md, with fresh values.
    basic_auth_ini = ("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = {postgres('mlflow_auth')}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    store = {"y9k-mlflow-db": {"backend-store-uri": postgres("mlflow")},
             "y9k-mlflow-auth": {"admin-username": admin["username"], "admin-password": admin["password"],
                                 "flask-secret-key": secrets.token_hex(32), "basic_auth.ini": basic_auth_ini},
             "y9k-s3": s3_keys}
    # Secret volumes: each item written where the container mounts it.
    mounts = {}
    for mount in container.get("volumeMounts", []):
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        local = tmp / mount["name"]
        local.mkdir()
        for item in volume["secret"]["items"]:
            (local / item["path"]).write_text(store[volume["secret"]["secretName"]][item["key"]])
        mounts[mount["mountPath"]] = str(local)
    env = resolve_env(container["env"], store)
    for key, value in env.items():
        for mount_path, local in mounts.items():
            env[key] = value.replace(mount_path, local)
    for source in container.get("envFrom", []):
        env.update(store[source["secretRef"]["name"]])
    port = free_port()
    args = [a if not a.startswith("--port=") else f"--port={port}" for a in container["args"]]
    assert f"--port={service['spec']['ports'][0]['port']}" in container["args"]
    venv_bin = Path(sys.executable).parent
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    server_env = {**base, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", **env,
                  "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    log_path = tmp / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([*container["command"], *args], stdout=log, stderr=subprocess.STDOUT, env=server_env,
                            start_new_session=True, cwd=tmp)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}{container['readinessProbe']['httpGet']['path']}", proc, log_path,
                      "mlflow server (deployment.yaml)", timeout=120)
        yield {"uri": uri, "admin": admin, "s3": s3_client, "dest": dest, "log": log_path, "pid": proc.pid}
    finally:
        stop_group(proc, grace=3)
        log.close()


@pytest.fixture(scope="module")
def pipeline_user(deployed):
    """The user `y9k-pipeline`, created by the admin as infra/mlflow/README.md does."""
    from mlflow.server import get_app_client

    password = secrets.token_hex(12)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = deployed["admin"]["username"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = deployed["admin"]["password"]
    try:
        get_app_client("basic-auth", tracking_uri=deployed["uri"]).create_user(username="y9k-pipeline",
                                                                               password=password)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"MLFLOW_TRACKING_USERNAME": "y9k-pipeline", "MLFLOW_TRACKING_PASSWORD": password}


def test_register_stage_and_registry_cli_with_the_deployments_credentials(deployed, pipeline_user, monkeypatch,
                                                                          capsys):
    import mlflow

    from pipelines import registry
    from pipelines.cli import main
    from pipelines.config import load_config
    from tests.unit.pipelines.test_predict import NAMES, PARENTS, WNIDS, crafted_model

    for k, v in {**pipeline_user, "MLFLOW_TRACKING_URI": deployed["uri"]}.items():
        monkeypatch.setenv(k, v)
    uri = deployed["uri"]
    # What the register stage does (pipelines/job.py, _register): log the pyfunc model into the
    # training run, register a version with provenance tags, promote it if better.
    with registry.using_tracking_uri(uri):
        experiment = mlflow.MlflowClient(uri).create_experiment("y9k-infra")
        with mlflow.start_run(experiment_id=experiment, run_name="train"):
            info = registry.log_pyfunc(crafted_model(), wnids=WNIDS, names=NAMES, parents=PARENTS, input_size=64,
                                       thresh=0.24, config_yaml=load_config("demo").to_yaml())
    tags = registry.provenance_tags(fingerprints={"wordtree": "f00d"}, tree_hash="abc", metrics={METRIC: 0.3})
    mv = registry.register_version(info.model_uri, MODEL, tags=tags, description="infra test", tracking_uri=uri)
    assert registry.promote_if_better(MODEL, mv.version, METRIC, 0.01, tracking_uri=uri).promoted
    # The artifacts went through the server to the bucket of --artifacts-destination.
    bucket, _, prefix = deployed["dest"].removeprefix("s3://").partition("/")
    keys = [o["Key"] for o in deployed["s3"].list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys

    args = ["--set", f"mlflow.registered_model={MODEL}"]
    assert main(["registry", "list", *args]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == [str(mv.version)]]
    assert len(rows) == 1 and "champion" in rows[0], rows

    # Wrong credentials: one line naming the problem, no traceback.
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-" + pipeline_user["MLFLOW_TRACKING_PASSWORD"])
    assert main(["registry", "list", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "401" in err and "MLFLOW_TRACKING_PASSWORD" in err, err
    assert pipeline_user["MLFLOW_TRACKING_PASSWORD"] not in err


def test_the_server_refuses_requests_without_credentials(deployed):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{deployed['uri']}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert e.value.code == 401


def test_the_server_runs_its_workers_and_no_job_runner(deployed):
    """deployment.yaml turns MLflow's job execution off: the pod holds the server and its
    workers, not seven Huey consumer processes beside them (the pipeline uses no server jobs)."""
    cmdlines = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.getsid(int(d.name)) == deployed["pid"]:
                cmdlines.append((d / "cmdline").read_bytes().decode(errors="replace").replace("\0", " "))
        except OSError:
            pass
    assert any("uvicorn" in c and "--workers 4" in c for c in cmdlines), cmdlines
    assert not [c for c in cmdlines if "huey" in c], cmdlines
