"""infra/ checked against the schemas of the control planes it targets, not hand-copied field lists.

- KubeRay objects: the `openAPIV3Schema` of KubeRay's own CRDs (1.6.2 and 1.7.0, from
  ../shared/data/schemas/kuberay), made strict: the API server silently prunes a field the schema
  does not know, so here an unknown field is an error.
- Kubernetes core objects, and the pod templates inside the KubeRay objects: `kubernetes-validate`'s
  strict schemas for Kubernetes 1.27 and for the newest version it ships.
- Ray cluster launcher configs: Ray's `ray-schema.json` and its `prepare_config`/`validate_config`;
  each AWS `node_config` as the EC2 `RunInstances` request botocore's service model describes,
  each GCP `node_config` as the GCE `Instance` resource (../shared/data/schemas/gcp).
- The image (read from the Dockerfile) has what each use needs, and pod requests fit their nodes.

Every check is also run on a deliberately broken copy, which it must reject.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[3]
INFRA = REPO / "infra"
KUBERAY_VERSIONS = ["v1.6.2", "v1.7.0"]
KUBERAY_CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
                     "RayCronJob": "ray.io_raycronjobs.yaml"}
KUBERAY_FILES = ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/raycronjob.yaml"]
CORE_FILES = ["k8s/cronjob-ray-submit.yaml", "mlflow/deployment.yaml"]
# The oldest Kubernetes these files are written for (CronJob timeZone is GA from 1.27).
OLDEST_KUBERNETES = "1.27"
GCE_INSTANCE_SCHEMA = ("schemas", "gcp", "compute-v1-Instance-rev20261106.schema.json")

# Every node type of the launcher configs and every Ray pod runs on a 16 vCPU / 64 GiB machine
# (m6i.4xlarge, g5.4xlarge, n2-standard-16, g2-standard-16: ray-cluster/README.md).
NODE_CPU_MILLI = 16_000
NODE_MEMORY_MIB = 64 * 1024
# Room left for the DaemonSets every node runs (kube-proxy, CNI, logging, the NVIDIA device plugin):
# their requests are of this order on GKE and EKS; a pod needing the last of it would not schedule.
DAEMONSET_CPU_MILLI = 500
DAEMONSET_MEMORY_MIB = 1024


def load_docs(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((INFRA / rel).read_text()) if d is not None]


def walk(obj: Any) -> Iterator[Any]:
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def pod_templates(obj: Any) -> list[dict[str, Any]]:
    """Every pod template (a dict whose `spec` has `containers`) inside a KubeRay object."""
    return [n for n in walk(obj) if isinstance(n, dict) and isinstance(n.get("spec"), dict)
            and isinstance(n["spec"].get("containers"), list)]


def ray_cluster_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayCluster specs in a KubeRay object (its own, a RayJob's, a RayCronJob's template's)."""
    spec = doc["spec"]
    return {"RayCluster": lambda: [spec], "RayJob": lambda: [spec["rayClusterSpec"]],
            "RayCronJob": lambda: [spec["jobTemplate"]["rayClusterSpec"]]}[doc["kind"]]()


# --------------------------------------------------------------------------------------------
# Validators: each returns a list of "path: message" lines, empty when the object is accepted.
# --------------------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A copy of a CRD schema that rejects unknown fields: `additionalProperties: false` wherever
    an object lists its `properties` and does not keep unknown fields itself."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def kuberay_validator(version: str, kind: str):
    import jsonschema

    crd = yaml.load(shared_path("schemas", "kuberay", version, KUBERAY_CRD_FILES[kind]).read_text(),
                    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # the C loader: 6 MB of CRDs
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))


def errors_of(validator, obj: Any) -> list[str]:
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(obj))


def kuberay_errors(doc: dict[str, Any], version: str) -> list[str]:
    return errors_of(kuberay_validator(version, doc["kind"]), doc)


@functools.cache
def kubernetes_versions() -> tuple[str, str]:
    """(the oldest version these files support, the newest version kubernetes-validate ships)."""
    import kubernetes_validate.utils as kvu

    return OLDEST_KUBERNETES, kvu.latest_version()


def kubernetes_errors(doc: dict[str, Any], version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    return []


def as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    """An embedded pod template as the core object kubernetes-validate checks (v1 PodTemplate)."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"},
            "template": template}


@functools.cache
def ray_schema_validator():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


def launcher_errors(cfg: dict[str, Any]) -> list[str]:
    """Ray's schema, then Ray's own preparation and validation of the config (no cloud calls)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    errors = errors_of(ray_schema_validator(), cfg)
    if not errors:
        try:
            validate_config(prepare_config(copy.deepcopy(cfg)))
        except Exception as e:  # Ray raises ValueError / jsonschema.ValidationError
            errors.append(f"Ray's validate_config: {e}")
    return errors


def run_instances_request(node_config: dict[str, Any]) -> dict[str, Any]:
    """The RunInstances parameters Ray's AWS node provider builds from a node_config
    (ray/autoscaler/_private/aws/node_provider.py, `_create_node`): the counts and tags added,
    Ray's own `SubnetIds` list turned into the one `SubnetId` of each request."""
    params = copy.deepcopy(node_config)
    params.update({"MinCount": 1, "MaxCount": 1,
                   "TagSpecifications": [{"ResourceType": "instance",
                                          "Tags": [{"Key": "ray-cluster-name", "Value": "y9k"}]}]})
    subnets = params.pop("SubnetIds", None)
    if subnets:
        params["SubnetId"] = subnets[0]
    return params


def ec2_errors(node_config: dict[str, Any]) -> list[str]:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    report = ParamValidator().validate(run_instances_request(node_config), shape)
    return report.generate_report().splitlines() if report.has_errors() else []


@functools.cache
def gce_validator():
    import jsonschema

    return jsonschema.Draft7Validator(json.loads(shared_path(*GCE_INSTANCE_SCHEMA).read_text()))


def gce_errors(node_config: dict[str, Any]) -> list[str]:
    return errors_of(gce_validator(), node_config)


def node_config_errors(cfg: dict[str, Any]) -> list[str]:
    check = {"aws": ec2_errors, "gcp": gce_errors}[cfg["provider"]["type"]]
    return [f"{name}.node_config: {e}" for name, t in cfg["available_node_types"].items()
            for e in check(t["node_config"])]


def dockerfile_problems(text: str) -> list[str]:
    """What the image lacks for its uses: the launcher's ssh and rsync into the head container,
    and a numeric non-root USER (the kubelet can check runAsNonRoot only on a uid)."""
    problems = []
    installed = set()
    for run in re.findall(r"^RUN\s+((?:.*\\\n)*.*)$", text, re.M):
        for m in re.finditer(r"apt-get install((?:\s+(?!&&)\S+)+)", run.replace("\\\n", " ")):
            installed |= {w for w in m.group(1).split() if not w.startswith("-")}
    for package, why in (("openssh-client", "ssh: the launcher's autoscaler reaches every worker over ssh"),
                         ("rsync", "rsync: the launcher syncs file_mounts with `rsync -e ssh`")):
        if package not in installed:
            problems.append(f"no {package} installed ({why})")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users:
        problems.append("no USER: the image runs as root")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit():
            problems.append(f"USER {users[-1]} is a name: runAsNonRoot needs a numeric uid")
        elif int(uid) == 0:
            problems.append("USER is root (uid 0)")
    return problems


def image_user(dockerfile: str) -> str | None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    return users[-1].split(":")[0] if users else None


def non_root_problems(doc: dict[str, Any], dockerfile: str) -> list[str]:
    """Containers with `runAsNonRoot: true` whose user the kubelet cannot check: neither the pod
    nor the container gives a numeric `runAsUser`, and the image's USER is not numeric either
    (the pod then fails with CreateContainerConfigError)."""
    problems = []
    for node in walk(doc):
        if not (isinstance(node, dict) and isinstance(node.get("containers"), list)):
            continue
        pod_ctx = node.get("securityContext") or {}
        for c in node["containers"]:
            ctx = {**pod_ctx, **(c.get("securityContext") or {})}
            if not ctx.get("runAsNonRoot"):
                continue
            user = ctx.get("runAsUser", image_user(dockerfile))
            if not str(user).isdigit() or int(user) == 0:
                problems.append(f"container {c['name']}: runAsNonRoot with user {user!r}")
    return problems


def quantity_milli_cpu(q: str | int | float) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else round(float(s) * 1000)


def quantity_mib(q: str | int) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 ** 2, "k": 1e3 / 2 ** 20, "M": 1e6 / 2 ** 20,
             "G": 1e9 / 2 ** 20}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    return float(m.group(1)) * units[m.group(2)] if m.group(2) else float(m.group(1)) / 2 ** 20


def gke_reserved(cpu_milli: int, memory_mib: float) -> tuple[float, float]:
    """kube-reserved CPU (millicores) and memory (MiB, with the 100 MiB eviction threshold) on a
    GKE node, from "Plan GKE Standard node sizes" (cloud.google.com/kubernetes-engine/docs/
    concepts/plan-node-sizes): CPU 6% of the first core, 1% of the next, 0.5% of the next 2,
    0.25% above 4; memory 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the
    next 112, 2% above 128. EKS uses the same CPU formula and reserves less memory (255 MiB +
    11 MiB per pod: 234 pods on an m6i.4xlarge = 2.8 GiB), so GKE's is the binding one."""
    cpu = 0.0
    for width, rate in ((1000, 0.06), (1000, 0.01), (2000, 0.005), (float("inf"), 0.0025)):
        cpu += min(max(cpu_milli, 0), width) * rate
        cpu_milli -= width
    mem = 0.0
    left = memory_mib
    for width, rate in ((4096, 0.25), (4096, 0.20), (8192, 0.10), (112 * 1024, 0.06), (float("inf"), 0.02)):
        mem += min(max(left, 0), width) * rate
        left -= width
    return cpu, mem + 100


def fit_problems(spec: dict[str, Any]) -> list[str]:
    """Ray pods whose requests do not fit a 16 vCPU / 64 GiB node after the kubelet's reservation
    and the DaemonSets' share."""
    reserved_cpu, reserved_mem = gke_reserved(NODE_CPU_MILLI, NODE_MEMORY_MIB)
    cpu_free = NODE_CPU_MILLI - reserved_cpu - DAEMONSET_CPU_MILLI
    mem_free = NODE_MEMORY_MIB - reserved_mem - DAEMONSET_MEMORY_MIB
    problems = []
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    for name, group in groups:
        containers = group["template"]["spec"]["containers"]
        requests = [c.get("resources", {}).get("requests", {}) for c in containers]
        cpu = sum(quantity_milli_cpu(r.get("cpu", 0)) for r in requests)
        mem = sum(quantity_mib(r.get("memory", 0)) for r in requests)
        if cpu > cpu_free or mem > mem_free:
            problems.append(f"{name}: requests {cpu}m CPU / {mem:.0f} MiB, a 16 vCPU / 64 GiB node has "
                            f"{cpu_free:.0f}m / {mem_free:.0f} MiB for it")
    return problems


# --------------------------------------------------------------------------------------------
# The real files pass
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERAY_VERSIONS)
@pytest.mark.parametrize("rel", KUBERAY_FILES)
def test_kuberay_objects_match_the_crd_schema(rel: str, version: str) -> None:
    (doc,) = load_docs(rel)
    assert kuberay_errors(doc, version) == [], f"infra/{rel} against KubeRay {version}"


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_kubernetes_objects_match_the_strict_schemas(which: str) -> None:
    version = kubernetes_versions()[which == "newest"]
    checked = 0
    for rel in CORE_FILES:
        for doc in load_docs(rel):
            assert kubernetes_errors(doc, version) == [], f"infra/{rel} {doc['kind']} on Kubernetes {version}"
            checked += 1
    for rel in KUBERAY_FILES:
        for template in pod_templates(load_docs(rel)[0]):
            assert kubernetes_errors(as_pod_template(template), version) == [], \
                f"a pod template of infra/{rel} on Kubernetes {version}"
            checked += 1
    assert checked == 3 + 3 * 3 + 2  # CronJob, Deployment, Service; 3 per cluster; 2 submitters


@pytest.mark.parametrize("rel", ["ray-cluster/aws.yaml", "ray-cluster/gcp.yaml"])
def test_launcher_configs_match_rays_schema_and_the_clouds_request_shapes(rel: str) -> None:
    (cfg,) = load_docs(rel)
    assert launcher_errors(cfg) == [], f"infra/{rel}"
    assert node_config_errors(cfg) == [], f"infra/{rel}"


def test_the_image_has_what_the_launcher_and_kubernetes_need() -> None:
    assert dockerfile_problems((INFRA / "docker/Dockerfile").read_text()) == []


def test_non_root_pods_have_a_user_the_kubelet_can_check() -> None:
    dockerfile = (INFRA / "docker/Dockerfile").read_text()
    checked = [d for rel in CORE_FILES + KUBERAY_FILES for d in load_docs(rel)]
    assert all(non_root_problems(d, dockerfile) == [] for d in checked)
    # The MLflow server's pod, without its runAsUser, on an image whose USER is the name `ray`.
    (deployment, _) = load_docs("mlflow/deployment.yaml")
    deployment["spec"]["template"]["spec"]["securityContext"].pop("runAsUser")
    assert non_root_problems(deployment, dockerfile) == []  # the image's numeric USER suffices
    assert non_root_problems(deployment, re.sub(r"^USER\s+\S+", "USER ray", dockerfile, flags=re.M))


@pytest.mark.parametrize("rel", KUBERAY_FILES)
def test_ray_pods_fit_their_16_vcpu_64_gib_nodes(rel: str) -> None:
    for spec in ray_cluster_specs(load_docs(rel)[0]):
        assert fit_problems(spec) == [], f"infra/{rel}"


@pytest.mark.parametrize("rel", KUBERAY_FILES)
def test_kuberay_clusters_turn_token_auth_on_for_the_operator(rel: str) -> None:
    """The operator authenticates its own job-status polls and StopJob only with `authOptions`;
    environment variables alone leave it at 401 and a succeeded RayJob marked Failed."""
    for spec in ray_cluster_specs(load_docs(rel)[0]):
        assert auth_problems(spec) == [], f"infra/{rel}"


def auth_problems(spec: dict[str, Any]) -> list[str]:
    auth = spec.get("authOptions") or {}
    if auth.get("mode") != "token":
        return ["authOptions.mode is not token: the operator sends no token to the dashboard"]
    if not auth.get("secretName"):
        return ["authOptions.secretName is unset: the operator would make its own Secret, "
                "which the CronJob submitter (infra/k8s) cannot share"]
    return []


# --------------------------------------------------------------------------------------------
# Each check bites: a broken copy of each file is rejected
# --------------------------------------------------------------------------------------------


def broken(rel: str, change) -> dict[str, Any]:
    doc = copy.deepcopy(load_docs(rel)[0])
    change(doc)
    return doc


def first_worker(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["workerGroupSpecs"][0]


KUBERAY_BREAKAGES = {
    # a wrong type: KubeRay's rayStartParams is map[string]string
    "number in rayStartParams": ("kuberay/raycluster.yaml",
                                 lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
                                 "num-cpus"),
    # an unknown field the API server would prune without a word
    "unknown RayJob field": ("kuberay/rayjob.yaml", lambda d: d["spec"].update({"shutdownAfterJobFinish": True}),
                             "shutdownAfterJobFinish"),
    "unknown pod field in a worker": ("kuberay/rayjob.yaml",
                                      lambda d: first_worker(d["spec"]["rayClusterSpec"])["template"]["spec"]
                                      .update({"tolerance": []}), "tolerance"),
    # a list where the schema has an object
    "list for authOptions": ("kuberay/raycluster.yaml",
                             lambda d: d["spec"].update({"authOptions": [{"mode": "token"}]}), "authOptions"),
    "enum": ("kuberay/raycluster.yaml", lambda d: d["spec"]["authOptions"].update({"mode": "Token"}), "Token"),
}


@pytest.mark.parametrize("version", KUBERAY_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUBERAY_BREAKAGES))
def test_kuberay_check_rejects_a_broken_copy(name: str, version: str) -> None:
    rel, change, needle = KUBERAY_BREAKAGES[name]
    errors = kuberay_errors(broken(rel, change), version)
    assert errors and needle in "\n".join(errors), errors


def test_raycronjob_time_zone_is_a_1_7_field() -> None:
    doc = broken("kuberay/raycronjob.yaml", lambda d: d["spec"].update({"timeZone": "Etc/UTC"}))
    assert any("timeZone" in e for e in kuberay_errors(doc, "v1.6.2"))
    assert kuberay_errors(doc, "v1.7.0") == []


def test_missing_auth_options_is_caught() -> None:
    doc = broken("kuberay/rayjob.yaml", lambda d: d["spec"]["rayClusterSpec"].pop("authOptions"))
    assert auth_problems(doc["spec"]["rayClusterSpec"])
    doc = broken("kuberay/rayjob.yaml", lambda d: d["spec"]["rayClusterSpec"]["authOptions"].pop("secretName"))
    assert auth_problems(doc["spec"]["rayClusterSpec"])


CORE_BREAKAGES = {
    "string for an integer": ("k8s/cronjob-ray-submit.yaml",
                              lambda d: d["spec"]["jobTemplate"]["spec"].update({"backoffLimit": "0"})),
    "unknown container field": ("mlflow/deployment.yaml",
                                lambda d: d["spec"]["template"]["spec"]["containers"][0].update({"argss": []})),
    "list for securityContext": ("mlflow/deployment.yaml",
                                 lambda d: d["spec"]["template"]["spec"].update({"securityContext": [{}]})),
}


@pytest.mark.parametrize("which", ["oldest", "newest"])
@pytest.mark.parametrize("name", sorted(CORE_BREAKAGES))
def test_kubernetes_check_rejects_a_broken_copy(name: str, which: str) -> None:
    rel, change = CORE_BREAKAGES[name]
    assert kubernetes_errors(broken(rel, change), kubernetes_versions()[which == "newest"])


def test_kubernetes_check_rejects_a_broken_embedded_pod_template() -> None:
    (template, *_) = pod_templates(broken("kuberay/raycluster.yaml", lambda d: d["spec"]["headGroupSpec"]
                                          ["template"]["spec"]["containers"][0].update({"ports": {"p": 1}})))
    assert kubernetes_errors(as_pod_template(template), kubernetes_versions()[1])


LAUNCHER_BREAKAGES = {
    "unknown top-level field": ("ray-cluster/aws.yaml", lambda c: c.update({"worker_nodes": {}})),
    "string for max_workers": ("ray-cluster/gcp.yaml", lambda c: c.update({"max_workers": "24"})),
}


@pytest.mark.parametrize("name", sorted(LAUNCHER_BREAKAGES))
def test_launcher_check_rejects_a_broken_copy(name: str) -> None:
    assert launcher_errors(broken(*LAUNCHER_BREAKAGES[name]))


NODE_CONFIG_BREAKAGES = {
    # the defect once in gcp.yaml (and in Ray's own examples): Instance.scheduling is an object
    "GCE scheduling as a list": ("ray-cluster/gcp.yaml", lambda c: c["available_node_types"]["gpu-train"]
                                 ["node_config"].update({"scheduling": [{"onHostMaintenance": "TERMINATE"}]})),
    "GCE unknown field": ("ray-cluster/gcp.yaml", lambda c: c["available_node_types"]["head"]["node_config"]
                          .update({"machine_type": "n2-standard-8"})),
    "EC2 string for an integer": ("ray-cluster/aws.yaml", lambda c: c["available_node_types"]["head"]
                                  ["node_config"]["BlockDeviceMappings"][0]["Ebs"].update({"VolumeSize": "200"})),
    "EC2 unknown field": ("ray-cluster/aws.yaml", lambda c: c["available_node_types"]["head"]["node_config"]
                          .update({"InstanceProfile": {"Name": "x"}})),
}


@pytest.mark.parametrize("name", sorted(NODE_CONFIG_BREAKAGES))
def test_node_config_check_rejects_a_broken_copy(name: str) -> None:
    assert node_config_errors(broken(*NODE_CONFIG_BREAKAGES[name]))


# The pip distribution providing each SQLAlchemy PostgreSQL driver.
POSTGRES_DRIVER_PACKAGES = {"psycopg": ("psycopg[binary]", "psycopg"), "psycopg2": ("psycopg2-binary", "psycopg2")}


def postgres_driver_problems(dockerfile: str) -> list[str]:
    """The image's pip installs lack the driver SQLAlchemy (the version installed with mlflow)
    uses for the `postgresql://` backend store URIs of infra/mlflow."""
    from sqlalchemy.engine import make_url

    driver = make_url("postgresql://u@h/db").get_dialect().driver
    installs = " ".join(re.findall(r"pip install ([^\n\\]+)", dockerfile)).replace('"', " ").split()
    if not set(POSTGRES_DRIVER_PACKAGES.get(driver, (driver,))) & set(installs):
        return [f"SQLAlchemy connects postgresql:// with {driver}, which the image does not install"]
    return []


def test_the_image_has_the_postgres_driver_sqlalchemy_picks() -> None:
    text = (INFRA / "docker/Dockerfile").read_text()
    assert postgres_driver_problems(text) == []
    assert postgres_driver_problems(text.replace('"psycopg[binary]"', "psycopg2-binary"))


def test_dockerfile_check_rejects_an_image_without_ssh_or_with_a_named_user() -> None:
    text = (INFRA / "docker/Dockerfile").read_text()
    no_ssh = text.replace(" openssh-client", "")
    assert no_ssh != text and any("openssh-client" in p for p in dockerfile_problems(no_ssh))
    named = re.sub(r"^USER\s+\S+", "USER ray", text, flags=re.M)
    assert any("is a name" in p for p in dockerfile_problems(named))
    assert any("root" in p for p in dockerfile_problems(re.sub(r"^USER\s+\S+", "USER 0", text, flags=re.M)))


def test_fit_check_rejects_a_pod_asking_for_the_whole_node() -> None:
    def whole_node(d):
        res = first_worker(d["spec"])["template"]["spec"]["containers"][0]["resources"]
        res["requests"] = res["limits"] = {"cpu": "16", "memory": "64Gi"}
    assert fit_problems(broken("kuberay/raycluster.yaml", whole_node)["spec"])


def test_gke_reservation_matches_the_published_examples() -> None:
    # GKE's page: a 16 GiB node reserves 2.6 GiB (+100 MiB eviction), a 4-core node 60m + 10m + 10m = 80m.
    cpu, mem = gke_reserved(4000, 16 * 1024)
    assert cpu == pytest.approx(80) and mem == pytest.approx(0.25 * 4096 + 0.2 * 4096 + 0.1 * 8192 + 100)
