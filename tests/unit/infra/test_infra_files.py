"""The infra/ definitions parse, and what they name exists and agrees with the project.

Every YAML file under infra/ is loaded with ``yaml.safe_load_all``; the checks then follow what a
deployment depends on: the job entrypoints and config files they run, the one project image (and
its Dockerfile), Ray token authentication on every side, the MLflow tracking URI, GPU requests,
autoscaling bounds, and that no credential is written inline. Validation against the real schemas
(KubeRay's CRDs, Kubernetes, Ray's launcher schema, EC2 and GCE) is in test_infra_schemas.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import load_config

REPO = Path(__file__).resolve().parents[3]
INFRA = REPO / "infra"
IMAGE_REPOSITORY = "ghcr.io/yolo9000-pipeline/y9k"

# Every YAML file under infra/ and the (apiVersion, kind) of each document, in order.
# None marks a Ray cluster launcher config (no apiVersion/kind: validated by Ray's schema).
EXPECTED_DOCUMENTS: dict[str, list[tuple[str, str]] | None] = {
    "ray-cluster/aws.yaml": None,
    "ray-cluster/gcp.yaml": None,
    "kuberay/raycluster.yaml": [("ray.io/v1", "RayCluster")],
    "kuberay/rayjob.yaml": [("ray.io/v1", "RayJob")],
    "kuberay/raycronjob.yaml": [("ray.io/v1", "RayCronJob")],
    "k8s/cronjob-ray-submit.yaml": [("batch/v1", "CronJob")],
    "mlflow/deployment.yaml": [("apps/v1", "Deployment"), ("v1", "Service")],
}
READMES = ["README.md", "ray-cluster/README.md", "kuberay/README.md", "k8s/README.md",
           "mlflow/README.md", "docker/README.md"]
LAUNCHER_FILES = ["ray-cluster/aws.yaml", "ray-cluster/gcp.yaml"]
# Manifests whose pods run Ray (cluster nodes, autoscaler, job submitters).
RAY_MANIFESTS = ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/raycronjob.yaml",
                 "k8s/cronjob-ray-submit.yaml"]
# Manifests that submit the pipeline on their own (entrypoint -> whether it is the retraining mode).
JOB_MANIFESTS = {"kuberay/rayjob.yaml": False, "kuberay/raycronjob.yaml": True,
                 "k8s/cronjob-ray-submit.yaml": True}

# Environment variables whose value is a credential: they must come from a Secret.
SECRET_ENV_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY|CREDENTIAL|_KEY$", re.IGNORECASE)
INLINE_SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # user:password@ in a URI, unless the password is a shell variable or a <placeholder>.
    "password in a URI": re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@]+:(?![$<])[^\s/@]+@"),
}
WEEK_S = 7 * 24 * 3600


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def load_docs(rel: str) -> list[dict[str, Any]]:
    """All YAML documents of infra/<rel>, empty documents dropped."""
    return [d for d in yaml.safe_load_all((INFRA / rel).read_text()) if d is not None]


def walk(obj: Any) -> Iterator[Any]:
    """Every node of a parsed YAML tree, depth first."""
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def strings(obj: Any) -> list[str]:
    return [s for s in walk(obj) if isinstance(s, str)]


def containers(doc: Any) -> list[dict[str, Any]]:
    """Every container of every pod template in a document."""
    found = []
    for node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("containers"), list):
            found.extend(node["containers"])
    return found


def env_map(env: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in env or []}


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def project_image() -> str:
    return f"{IMAGE_REPOSITORY}:{project_version()}"


def pipeline_commands(text: str) -> list[list[str]]:
    """The `python pipelines/....py ...` commands in a string, as argument lists."""
    commands = []
    # A command ends at a line end, a shell separator or a Markdown backtick.
    for m in re.finditer(r"python3?\s+(pipelines/\S+\.py)([^\n;&|`]*)", text):
        commands.append([m.group(1), *shlex.split(m.group(2).rstrip(" \\"))])
    return commands


def job_commands(rel: str) -> list[list[str]]:
    """Pipeline commands a manifest actually runs (its parsed strings, not its comments)."""
    return [cmd for doc in load_docs(rel) for s in strings(doc) for cmd in pipeline_commands(s)]


def all_pipeline_commands() -> dict[str, list[list[str]]]:
    """Pipeline commands named anywhere in each infra file: text and comments, parsed YAML strings."""
    found = {}
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(INFRA))
            found[rel] = pipeline_commands(path.read_text())
            if path.suffix == ".yaml":
                found[rel] += job_commands(rel)
    return found


def inline_secret_findings(text: str) -> list[str]:
    return [name for name, pat in INLINE_SECRET_PATTERNS.items() if pat.search(text)]


def env_secret_findings(doc: Any) -> list[str]:
    """Secret-looking env vars set inline, and Secret objects carrying their data in the file."""
    problems = []
    if isinstance(doc, dict) and doc.get("kind") == "Secret" and ({"data", "stringData"} & doc.keys()):
        problems.append(f"Secret {doc.get('metadata', {}).get('name')} holds its data inline")
    for node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("name"), str) and SECRET_ENV_NAME.search(node["name"]):
            if "value" in node:
                problems.append(f"env {node['name']} has an inline value")
            elif "valueFrom" in node and "secretKeyRef" not in node["valueFrom"]:
                problems.append(f"env {node['name']} is not read from a Secret")
    return problems


def launcher_env(cfg: dict[str, Any]) -> dict[str, str]:
    """`--env NAME=VALUE` options of a cluster launcher's docker run_options."""
    env = {}
    for opt in cfg["docker"].get("run_options", []):
        parts = shlex.split(opt)
        if parts and parts[0] in ("--env", "-e") and "=" in parts[1]:
            name, value = parts[1].split("=", 1)
            env[name] = value
    return env


def worker_groups(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return cluster_spec.get("workerGroupSpecs", [])


def raycluster_spec() -> dict[str, Any]:
    return load_docs("kuberay/raycluster.yaml")[0]["spec"]


@pytest.fixture(scope="module")
def yolo9000_config():
    return load_config(REPO / "pipelines/configs/yolo9000.yaml")


# --------------------------------------------------------------------------------------------
# Files, kinds, READMEs
# --------------------------------------------------------------------------------------------


def test_every_yaml_file_is_known_and_has_the_expected_kinds() -> None:
    found = sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.yaml"))
    assert found == sorted(EXPECTED_DOCUMENTS), "a new infra YAML file must be listed in EXPECTED_DOCUMENTS"
    for rel, expected in EXPECTED_DOCUMENTS.items():
        docs = load_docs(rel)
        assert docs and all(isinstance(d, dict) for d in docs), rel
        if expected is None:
            assert len(docs) == 1 and "apiVersion" not in docs[0] and "provider" in docs[0], rel
        else:
            assert [(d.get("apiVersion"), d.get("kind")) for d in docs] == expected, rel
            assert all(d.get("metadata", {}).get("name") for d in docs), f"{rel}: unnamed object"


def test_every_folder_has_a_readme_and_the_dockerfile_exists() -> None:
    for rel in READMES:
        text = (INFRA / rel).read_text()
        assert text.startswith("# ") and len(text) > 500, f"infra/{rel} is missing or nearly empty"
    assert (INFRA / "docker/Dockerfile").is_file()
    folders = {p.parent for p in INFRA.rglob("*") if p.is_file()}
    assert all((f / "README.md").is_file() for f in folders), "every infra folder has a README.md"


# --------------------------------------------------------------------------------------------
# Entrypoints and configs
# --------------------------------------------------------------------------------------------


def test_named_entrypoints_and_configs_exist_and_load() -> None:
    for rel in JOB_MANIFESTS:
        assert job_commands(rel), f"infra/{rel} runs no `python pipelines/...py` entrypoint"
    for rel, cmds in all_pipeline_commands().items():
        for cmd in cmds:
            assert (REPO / cmd[0]).is_file(), f"infra/{rel} runs {cmd[0]}, which is not in the repository"
            config = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "--config"]
            overrides = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "--set"]
            for path in config:
                assert (REPO / path).is_file(), f"infra/{rel} names {path}, which is not in the repository"
                # The job's config with the job's overrides must load and validate.
                load_config(REPO / path, overrides)
    # Config paths named outside a command (comments, READMEs) exist too.
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            for name in re.findall(r"pipelines/configs/[\w.-]+\.yaml", path.read_text()):
                assert (REPO / name).is_file(), f"{path.relative_to(REPO)} names {name}, which does not exist"


def test_scheduled_jobs_retrain_and_the_one_off_job_does_not() -> None:
    for rel, retrain in JOB_MANIFESTS.items():
        for cmd in job_commands(rel):
            assert ("--retrain" in cmd) == retrain, f"infra/{rel}: {' '.join(cmd)}"


def test_entrypoint_flags_are_accepted_by_full_py() -> None:
    full = REPO / "pipelines/full.py"
    assert full.is_file(), "pipelines/full.py (the job entrypoint) is missing"
    used = {a.split("=", 1)[0] for cmds in all_pipeline_commands().values() for cmd in cmds
            if cmd[0] == "pipelines/full.py" for a in cmd[1:] if a.startswith("--")}
    assert used >= {"--config", "--retrain"}
    out = subprocess.run([sys.executable, str(full), "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in used:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out.stdout), f"full.py --help has no {flag}"


# --------------------------------------------------------------------------------------------
# The project image
# --------------------------------------------------------------------------------------------


def test_every_manifest_runs_the_one_project_image() -> None:
    image = project_image()
    seen = 0
    for rel, expected in EXPECTED_DOCUMENTS.items():
        docs = load_docs(rel)
        refs = [docs[0]["docker"]["image"]] if expected is None else [c["image"] for d in docs for c in containers(d)]
        assert refs, f"infra/{rel} names no image"
        assert set(refs) == {image}, f"infra/{rel} uses {sorted(set(refs))}, expected {image}"
        seen += len(refs)
    assert seen >= 10
    # Tags quoted anywhere in infra/ (READMEs, Dockerfile comments) are the same one.
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            for ref in re.findall(rf"{re.escape(IMAGE_REPOSITORY)}:[\w.-]+", path.read_text()):
                assert ref == image, f"{path.relative_to(REPO)} names {ref}, expected {image}"


def test_dockerfile_builds_the_project_with_pinned_torch() -> None:
    text = (INFRA / "docker/Dockerfile").read_text()
    assert re.search(r"^FROM (python:3\.11-slim|rayproject/ray:2\.60\.0-py311-gpu)\s*$", text, re.M)
    assert re.search(r'org\.opencontainers\.image\.version="([^"]+)"', text).group(1) == project_version()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    installs = [line for line in text.splitlines() if "pip install" in line and " . " in f"{line} "]
    assert installs and all(torch_pin in line for line in installs), "the project is installed with torch pinned"
    # Everything the Dockerfile copies exists and is let through by its .dockerignore allowlist.
    ignore = (INFRA / "docker/Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M)
    assert copies
    for line in copies:
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
            assert src in allowed, f"Dockerfile copies {src}, but Dockerfile.dockerignore excludes it"


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------


def test_no_credentials_are_written_inline() -> None:
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            assert inline_secret_findings(path.read_text()) == [], path.relative_to(REPO)
    for rel, expected in EXPECTED_DOCUMENTS.items():
        for doc in load_docs(rel):
            assert env_secret_findings(doc) == [], f"infra/{rel}"
            if expected is None:
                secret_env = [n for n in launcher_env(doc) if SECRET_ENV_NAME.search(n)]
                assert secret_env == [], f"infra/{rel} passes {secret_env} inline"


def test_the_secret_checks_catch_inline_credentials() -> None:
    fake_key_id = "AKIA" + "Q" * 16
    assert inline_secret_findings(f"AWS_ACCESS_KEY_ID={fake_key_id}") == ["AWS access key id"]
    assert inline_secret_findings("aws_secret_access_key = " + "a1B2" * 10) == ["AWS secret access key"]
    assert inline_secret_findings("postgresql://mlflow:hunter22@db:5432/mlflow") == ["password in a URI"]
    assert inline_secret_findings("postgresql://mlflow:${PGPASSWORD}@db:5432/mlflow") == []
    pod = {"containers": [{"name": "c", "env": [{"name": "MLFLOW_TRACKING_PASSWORD", "value": "x"},
                                                 {"name": "RAY_AUTH_TOKEN",
                                                  "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k"}}},
                                                 {"name": "RAY_AUTH_MODE", "value": "token"}]}]}
    assert env_secret_findings(pod) == ["env MLFLOW_TRACKING_PASSWORD has an inline value",
                                        "env RAY_AUTH_TOKEN is not read from a Secret"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert env_secret_findings(secret) == ["Secret s holds its data inline"]


def test_every_referenced_secret_and_service_account_is_documented() -> None:
    readme = (INFRA / "README.md").read_text()
    names = set()
    for rel, expected in EXPECTED_DOCUMENTS.items():
        if expected is None:
            continue
        for doc in load_docs(rel):
            for node in walk(doc):
                if not isinstance(node, dict):
                    continue
                for key in ("secretKeyRef", "secretRef"):
                    if isinstance(node.get(key), dict):
                        names.add(node[key]["name"])
                if isinstance(node.get("secret"), dict):
                    names.add(node["secret"]["secretName"])
                if isinstance(node.get("serviceAccountName"), str):
                    names.add(node["serviceAccountName"])
                if isinstance(node.get("authOptions"), dict):
                    names.add(node["authOptions"]["secretName"])
    assert {"y9k-ray-auth", "y9k-mlflow-db", "y9k-mlflow-auth", "y9k-ray", "y9k-mlflow"} <= names
    for name in sorted(names):
        assert f"`{name}`" in readme, f"infra/README.md does not say how to create `{name}`"


# --------------------------------------------------------------------------------------------
# Ray token authentication and the MLflow tracking URI
# --------------------------------------------------------------------------------------------


def test_ray_token_auth_is_set_the_same_way_on_every_side() -> None:
    """KubeRay clusters turn token auth on with `authOptions` (the operator then sets the env of
    every Ray container and authenticates its own calls); the plain CronJob's submitter, which
    KubeRay does not manage, reads the same Secret and key through its env."""
    token_refs = set()
    for rel in RAY_MANIFESTS:
        doc = load_docs(rel)[0]
        specs = [n for n in walk(doc) if isinstance(n, dict) and "headGroupSpec" in n]
        for spec in specs:
            auth = spec["authOptions"]
            assert auth["mode"] == "token", f"infra/{rel}"
            # KubeRay reads the token from this key of the Secret (RAY_AUTH_TOKEN_SECRET_KEY).
            token_refs.add((auth["secretName"], "auth_token"))
        env_lists = [c.get("env") for c in containers(doc)]
        env_lists += [n["autoscalerOptions"].get("env") for n in walk(doc)
                      if isinstance(n, dict) and isinstance(n.get("autoscalerOptions"), dict)]
        assert env_lists
        for env in env_lists:
            env = env_map(env)
            if specs and "RAY_AUTH_MODE" not in env and "RAY_AUTH_TOKEN" not in env:
                continue  # set by KubeRay from authOptions
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"infra/{rel}: RAY_AUTH_MODE is not token"
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            token_refs.add((ref["name"], ref["key"]))
    assert len(token_refs) == 1, f"every Ray container reads the same token Secret, got {token_refs}"
    for rel in LAUNCHER_FILES:
        cfg = load_docs(rel)[0]
        assert launcher_env(cfg).get("RAY_AUTH_MODE") == "token", f"infra/{rel}"
        assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", f"infra/{rel}"


def test_ray_nodes_get_the_mlflow_tracking_uri_of_the_deployed_server() -> None:
    service = load_docs("mlflow/deployment.yaml")[1]
    port = service["spec"]["ports"][0]["port"]
    in_cluster = f"http://{service['metadata']['name']}:{port}"
    for doc in [raycluster_spec()] + [load_docs(r)[0] for r in ("kuberay/rayjob.yaml", "kuberay/raycronjob.yaml")]:
        ray_nodes = [c for c in containers(doc) if c["name"] in ("ray-head", "ray-worker")]
        assert ray_nodes
        for c in ray_nodes:
            env = env_map(c.get("env"))
            assert env["MLFLOW_TRACKING_URI"]["value"] == in_cluster
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert "secretKeyRef" in env[name]["valueFrom"], name
    for rel in LAUNCHER_FILES:
        cfg = load_docs(rel)[0]
        assert re.match(r"https?://", launcher_env(cfg).get("MLFLOW_TRACKING_URI", "")), f"infra/{rel}"
        assert "~/.mlflow/credentials" in cfg["file_mounts"], f"infra/{rel}"


def test_mlflow_server_uses_postgres_s3_and_basic_auth() -> None:
    deployment, service = load_docs("mlflow/deployment.yaml")
    (c,) = containers(deployment)
    cmd = c["command"] + c["args"]
    assert cmd[:2] == ["mlflow", "server"]
    assert "--app-name=basic-auth" in cmd
    assert any(re.fullmatch(r"--artifacts-destination=s3://\S+", a) for a in cmd)
    env = env_map(c["env"])
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]
    assert "secretKeyRef" in env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]
    # The Service reaches the container's named port, and the pods match its selector.
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in named
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The Host header clients send in-cluster is accepted.
    hosts = next(a.split("=", 1)[1] for a in cmd if a.startswith("--allowed-hosts=")).split(",")
    assert f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}" in hosts


# --------------------------------------------------------------------------------------------
# Ray cluster launcher (AWS, GCP)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", LAUNCHER_FILES)
def test_launcher_node_groups_cpu_head_gpu_and_cpu_workers(rel: str, yolo9000_config) -> None:
    cfg = load_docs(rel)[0]
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert "--num-cpus=0" in " ".join(cfg["head_start_ray_commands"])
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu = {k: v for k, v in workers.items() if "gpu" in k}
    cpu = {k: v for k, v in workers.items() if "gpu" not in k}
    assert gpu and cpu
    for name, t in workers.items():
        assert 0 <= t.get("min_workers", 0) <= t["max_workers"], f"{rel}: {name}"
    assert sum(t["max_workers"] for t in workers.values()) <= cfg["max_workers"]
    train = yolo9000_config.train
    for name, t in gpu.items():
        assert t["resources"]["GPU"] >= 1, f"{rel}: {name}"
        # The paper-scale run fits: one Ray Train worker (GPU + cpus_per_worker) per node.
        assert t["resources"]["CPU"] >= train.cpus_per_worker
        assert t["max_workers"] * t["resources"]["GPU"] >= train.num_workers
    for name, t in cpu.items():
        assert t["resources"].get("GPU", 0) == 0 and t["resources"]["CPU"] >= 1, f"{rel}: {name}"
    # The data streams' CPUs (train.data_cpus) fit beside the training workers at full scale.
    cpus = sum(t["max_workers"] * t["resources"]["CPU"] for t in workers.values())
    assert train.data_cpus > 0 and train.num_workers * train.cpus_per_worker + train.data_cpus <= cpus


# --------------------------------------------------------------------------------------------
# KubeRay
# --------------------------------------------------------------------------------------------


def test_rayjob_and_raycronjob_run_the_same_cluster_as_raycluster() -> None:
    spec = raycluster_spec()
    assert load_docs("kuberay/rayjob.yaml")[0]["spec"]["rayClusterSpec"] == spec
    assert load_docs("kuberay/raycronjob.yaml")[0]["spec"]["jobTemplate"]["rayClusterSpec"] == spec


def test_kuberay_cluster_matches_ray_and_the_training_config(yolo9000_config) -> None:
    import ray

    spec = raycluster_spec()
    assert spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    groups = [spec["headGroupSpec"], *worker_groups(spec)]
    for group in groups:
        # KubeRay's rayStartParams is map[string]string: a bare YAML number is rejected.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group.get("groupName", "head")
    for c in containers(spec):
        assert all(isinstance(e.get("value", ""), str) for e in c.get("env", [])), c["name"]
    gpu = [g for g in worker_groups(spec) if "gpu" in g["groupName"]]
    cpu = [g for g in worker_groups(spec) if "gpu" not in g["groupName"]]
    assert gpu and cpu
    train = yolo9000_config.train
    for g in worker_groups(spec):
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], g["groupName"]
        (c,) = g["template"]["spec"]["containers"]
        res = c["resources"]
        assert res["requests"] == res["limits"], f"{g['groupName']}: requests and limits differ"
        gpus = int(res["limits"].get("nvidia.com/gpu", 0))
        if g in gpu:
            assert gpus >= 1, f"{g['groupName']} requests no nvidia.com/gpu"
            assert g["maxReplicas"] * gpus >= train.num_workers
            assert float(res["limits"]["cpu"]) >= train.cpus_per_worker
        else:
            assert gpus == 0, f"{g['groupName']} requests a GPU"


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


def test_scheduled_retraining_is_weekly_and_cannot_overlap() -> None:
    cron = load_docs("kuberay/raycronjob.yaml")[0]["spec"]
    k8s = load_docs("k8s/cronjob-ray-submit.yaml")[0]["spec"]
    assert cron["schedule"] == k8s["schedule"]
    minute, hour, dom, month, dow = cron["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and dom == "*" and month == "*" and dow.isdigit()
    # A run is stopped before the next weekly one starts (RayCronJob has no concurrencyPolicy).
    assert 0 < cron["jobTemplate"]["activeDeadlineSeconds"] < WEEK_S
    assert k8s["concurrencyPolicy"] == "Forbid"
    assert 0 < k8s["jobTemplate"]["spec"]["activeDeadlineSeconds"] < WEEK_S
    (submitter,) = containers(k8s)
    script = " ".join(submitter["command"] + submitter["args"])
    head_service = f"{load_docs('kuberay/raycluster.yaml')[0]['metadata']['name']}-head-svc"
    assert f"--address http://{head_service}:8265" in script


def test_jobs_upload_the_source_baked_into_the_image() -> None:
    workdir = re.findall(r"^WORKDIR\s+(\S+)", (INFRA / "docker/Dockerfile").read_text(), re.M)[-1]
    for spec in (load_docs("kuberay/rayjob.yaml")[0]["spec"],
                 load_docs("kuberay/raycronjob.yaml")[0]["spec"]["jobTemplate"]):
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": workdir}
    (submitter,) = containers(load_docs("k8s/cronjob-ray-submit.yaml")[0])
    args = shlex.split(" ".join(submitter["args"]))
    assert args[args.index("--working-dir") + 1] == workdir
