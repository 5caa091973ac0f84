"""What Kubernetes and the KubeRay operator do with a manifest before a container runs, for the
tests that run infra/'s containers here: env resolution from Secrets, `$(VAR)` expansion, the env
KubeRay adds from `authOptions`, and the `ray job submit` command KubeRay builds for a RayJob.
Each is a port of the named upstream code, kept small; the tests then run the result for real.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
# KubeRay reads the token from this key of the Secret (utils.RAY_AUTH_TOKEN_SECRET_KEY).
KUBERAY_TOKEN_KEY = "auth_token"


def load_doc(rel: str, index: int = 0) -> dict[str, Any]:
    return [d for d in yaml.safe_load_all((INFRA / rel).read_text()) if d is not None][index]


def kuberay_auth_env(cluster_name: str, cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The env KubeRay (1.6.2, 1.7.0) adds to the head, workers, autoscaler and submitter when
    `authOptions.mode` is token: ray-operator/controllers/ray/common/pod.go,
    SetContainerTokenAuthEnvVars (the Secret defaults to one named after the cluster)."""
    auth = cluster_spec.get("authOptions") or {}
    if auth.get("mode") != "token":
        return []
    secret = auth.get("secretName") or cluster_name
    return [{"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": KUBERAY_TOKEN_KEY}}}]


def with_env(env: list[dict[str, Any]] | None, added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KubeRay appends a variable only where the container does not set it (EnvVarExists)."""
    env = list(env or [])
    names = {e["name"] for e in env}
    return env + [e for e in added if e["name"] not in names]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of `$(VAR)` in command, args and env values: `$$` is a literal `$`,
    `$(NAME)` a variable defined before, anything else stays as written."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def resolve_env(env: list[dict[str, Any]], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's env as the kubelet sets it: values expanded, secretKeyRefs read from `secrets`
    (a missing Secret or key fails as it would keep the pod from starting)."""
    out: dict[str, str] = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = expand(str(e["value"]), out)
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["name"] not in secrets or ref["key"] not in secrets[ref["name"]]:
                raise AssertionError(f"env {e['name']}: Secret {ref['name']} key {ref['key']} does not exist "
                                     "(CreateContainerConfigError)")
            out[e["name"]] = secrets[ref["name"]][ref["key"]]
    return out


def kuberay_submit_script(rayjob_spec: dict[str, Any], dashboard_url: str, job_id: str) -> str:
    """The submitter script of a RayJob in K8sJobMode, as KubeRay v1.6.2 builds it
    (ray-operator/controllers/ray/common/job.go, BuildJobSubmitCommand): submit once with
    --no-wait unless the job exists, then follow its logs. It runs as `/bin/bash -ce -- <script>`.
    (v1.7.0 first waits for the dashboard's GCS health endpoint; the rest is the same.)"""
    address = dashboard_url if dashboard_url.startswith("http://") else f"http://{dashboard_url}"
    cmd = ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then",
           "ray", "job", "submit", "--address", address, "--no-wait"]
    if rayjob_spec.get("runtimeEnvYAML"):
        # Go's strconv.Quote of the JSON: a double-quoted string with \" escapes, like json.dumps.
        runtime_env = json.dumps(yaml.safe_load(rayjob_spec["runtimeEnvYAML"]), separators=(",", ":"))
        cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    cmd += ["--submission-id", job_id]
    for field, flag in (("entrypointNumCpus", "--entrypoint-num-cpus"), ("entrypointNumGpus", "--entrypoint-num-gpus")):
        if rayjob_spec.get(field, 0) > 0:
            cmd += [flag, f"{rayjob_spec[field]:f}"]
    if rayjob_spec.get("entrypointResources"):
        cmd += ["--entrypoint-resources", json.dumps(rayjob_spec["entrypointResources"])]
    cmd += ["--", rayjob_spec["entrypoint"].strip(), ";", "fi", ";",
            "ray", "job", "logs", "--address", address, "--follow", job_id]
    return " ".join(cmd)


def container_script(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """A container's command + args after Kubernetes' expansion."""
    return [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
