"""The Kubernetes manifests (deploy/k8s) and the Dockerfile, checked offline.

The base and both overlays are rendered with `kubectl kustomize`; every rendered document is
validated against the Kubernetes API schemas of kubernetes-validate in strict mode (unknown
fields refused) for the newest bundled Kubernetes version and the oldest one the README
promises. The Prometheus operator's resources (ServiceMonitor, PrometheusRule) have no schema
there, so their structure is checked here. The rest is what a schema cannot see: probes on the
right port, resources, secrets, setting names and values (loaded through lambdascope.config),
GPUs per overlay, images against the Dockerfile's targets, RBAC verbs, and network paths
(the policies are evaluated for concrete pairs of pods).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
from decimal import Decimal
from importlib import metadata

import pytest
import yaml

from lambdascope import __version__, config

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
VARIANTS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "gpu": K8S / "overlays" / "gpu",
            "tls": K8S / "overlays" / "tls"}
# Newest schema kubernetes-validate bundles, and the oldest version deploy/k8s/README.md supports.
K8S_VERSIONS = ("1.37", "1.29")

SERVICES = ("registry", "trainer", "estimator")
IMAGE_PREFIX = "ghcr.io/lambdascope/"
SECRET = "lambdascope-secrets"
SECRET_KEYS = {"LAMBDASCOPE_ADMIN_KEY", "LAMBDASCOPE_S3_ACCESS_KEY", "LAMBDASCOPE_S3_SECRET_KEY",
               "PGPASSWORD"}
# The settings of the Kubernetes Job backend (lambdascope.backends), documented in overlays/gpu.
JOB_BACKEND_KEYS = {"LAMBDASCOPE_JOB_BACKEND", "LAMBDASCOPE_JOB_IMAGE", "LAMBDASCOPE_JOB_GPU",
                    "LAMBDASCOPE_JOB_NODE_SELECTOR", "LAMBDASCOPE_JOB_TOLERATIONS",
                    "LAMBDASCOPE_JOB_NAMESPACE", "LAMBDASCOPE_JOB_ACTIVE_DEADLINE_SECONDS",
                    "LAMBDASCOPE_JOB_TTL_SECONDS", "LAMBDASCOPE_JOB_BACKOFF_LIMIT",
                    "LAMBDASCOPE_JOB_TLS_SECRET"}
assert JOB_BACKEND_KEYS == {config.ENV_PREFIX + f.name.upper()
                            for f in dataclasses.fields(config.Settings)
                            if f.name.startswith("job_")}
# Read by libpq (psycopg) for a database URL without a password.
LIBPQ_KEYS = {"PGPASSWORD"}
SETTINGS_KEYS = {config.ENV_PREFIX + f.name.upper()
                 for f in dataclasses.fields(config.Settings) if f.name != "service"}
GPU = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
JOBS_CONTROLLER = "lambdascope-jobs-controller"
JOBS_CONTROLLER_RULES = {
    ("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")
} | {("", "pods", verb) for verb in ("get", "list", "watch")} | {("", "pods/log", "get"),
                                                                 ("", "secrets", "create")}
WORKER_LABELS = {"app.kubernetes.io/name": "lambdascope", "app.kubernetes.io/component": "worker",
                 "app.kubernetes.io/part-of": "lambdascope"}
# What `requirements.txt` lists for tests or code generation only; everything else is runtime.
NOT_IN_IMAGES = {"pytest", "pytest-timeout", "moto", "kubernetes-validate", "grpcio-tools",
                 "cryptography", "hypothesis", "pandas"}


# -- rendering ------------------------------------------------------------------------------

@functools.cache
def _render(variant: str) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations in deploy/k8s were NOT "
                    "rendered or validated (install kubectl >= 1.27, it carries kustomize)")
    proc = subprocess.run([kubectl, "kustomize", str(VARIANTS[variant])], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"kubectl kustomize {VARIANTS[variant]} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


@pytest.fixture(params=list(VARIANTS))
def variant(request) -> str:
    return request.param


@pytest.fixture
def docs(variant) -> tuple[dict, ...]:
    return _render(variant)


def _of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _named(docs, kind: str, name: str) -> dict:
    found = [d for d in _of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _workloads(docs) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def _pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict) -> list[dict]:
    spec = _pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def _lambdascope_containers(docs) -> list[tuple[dict, dict]]:
    return [(w, c) for w in _workloads(docs) for c in _containers(w)
            if c["image"].startswith(IMAGE_PREFIX)]


def _port(container: dict, name: str) -> dict:
    ports = [p for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"container {container['name']}: no single port named {name!r}"
    return ports[0]


# -- schemas ----------------------------------------------------------------------------------

def test_every_document_validates_strictly_against_the_kubernetes_schemas(docs):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    # structure checked by the tests below; cert-manager's only in the tls variant
    crds = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}
    errors = []
    for version in K8S_VERSIONS:
        for doc in docs:
            where = f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
            try:
                validated = kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                if doc["kind"] not in crds:
                    errors.append(f"{where}: no schema for {doc['apiVersion']} {doc['kind']}")
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{where}: {path}: {exc.message}")
            else:
                assert validated == version, f"{where}: validated against {validated}"
    assert not errors, "\n".join(errors)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "StatefulSet", "ConfigMap",
                                         "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy",
                                         "ServiceMonitor", "PrometheusRule"}


def test_every_service_monitor_selects_a_services_metrics_port(docs):
    services = _of_kind(docs, "Service")
    monitors = _of_kind(docs, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == sorted(SERVICES)
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, spec
        wanted = spec["selector"]["matchLabels"]
        assert wanted and set(spec["selector"]) == {"matchLabels"}
        matched = [s for s in services if _labels_match(wanted, s["metadata"].get("labels", {}))]
        assert len(matched) == 1, f"ServiceMonitor {monitor['metadata']['name']} selects " \
                                  f"{[s['metadata']['name'] for s in matched]}"
        service = matched[0]
        assert service["metadata"]["name"] == monitor["metadata"]["name"]  # the job label
        port_names = {p.get("name") for p in service["spec"]["ports"]}
        assert spec["endpoints"], "a ServiceMonitor without endpoints scrapes nothing"
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] == "metrics" and "metrics" in port_names
            assert endpoint.get("path", "/metrics") == "/metrics"
            assert re.fullmatch(r"\d+[smh]", endpoint.get("interval", "30s"))
        # ... and the Service's metrics port reaches the metrics port of the pods it selects.
        pods = [w for w in _workloads(docs)
                if _labels_match(service["spec"]["selector"],
                                 w["spec"]["template"]["metadata"]["labels"])]
        assert len(pods) == 1
        metrics = next(p for p in service["spec"]["ports"] if p["name"] == "metrics")
        container = _containers(pods[0])[0]
        assert metrics["targetPort"] in ("metrics", _port(container, "metrics")["containerPort"])


def test_prometheus_rules_are_well_formed(docs):
    rules = _of_kind(docs, "PrometheusRule")
    assert rules, "the base includes alerts/prometheus-rule.yaml"
    for doc in rules:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        groups = doc["spec"]["groups"]
        assert groups and set(doc["spec"]) == {"groups"}
        names = [g["name"] for g in groups]
        assert len(names) == len(set(names)), f"duplicate group names: {names}"
        for group in groups:
            assert group["rules"], f"group {group['name']} has no rules"
            for rule in group["rules"]:
                kinds = {"alert", "record"} & set(rule)
                assert len(kinds) == 1, f"a rule needs exactly one of alert/record: {rule}"
                assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), rule
                assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for",
                                     "labels", "annotations"}, rule
                for key in ("labels", "annotations"):
                    assert all(isinstance(v, str) for v in rule.get(key, {}).values()), rule
                if "for" in rule:
                    assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule["for"]), rule
                if "record" in rule:
                    assert "annotations" not in rule and "for" not in rule, rule


# -- pods -------------------------------------------------------------------------------------

def test_every_service_probes_grpc_health_on_its_grpc_port(docs):
    deployments = {d["metadata"]["name"]: d for d in _of_kind(docs, "Deployment")}
    assert sorted(deployments) == sorted(SERVICES)
    for name, deployment in deployments.items():
        (container,) = _pod_spec(deployment)["containers"]
        grpc_port = _port(container, "grpc")["containerPort"]
        _port(container, "metrics")
        env = _container_env(docs, container)
        if "LAMBDASCOPE_TLS_CERT" in env:  # the kubelet's probes cannot speak TLS
            probe_port = _port(container, "health")["containerPort"]
            assert int(env["LAMBDASCOPE_HEALTH_PORT"]) == probe_port != grpc_port, name
        else:
            probe_port = grpc_port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe == "startupProbe" and probe not in container:
                continue
            assert probe in container, f"{name}: no {probe}"
            handler = container[probe]
            assert set(handler) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, \
                f"{name}: {probe} must be a gRPC health check"
            assert handler["grpc"]["port"] == probe_port, f"{name}: {probe} on another port"
            # readiness and startup follow the dependencies (the empty name); liveness does not
            wanted = "liveness" if probe == "livenessProbe" else ""
            assert handler["grpc"].get("service", "") == wanted, \
                f"{name}: {probe} must ask for the service name {wanted!r}"
        service = _named(docs, "Service", name)
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        assert set(by_name) == {"grpc", "metrics"}
        assert by_name["grpc"]["port"] == 50051
        assert by_name["grpc"]["targetPort"] in ("grpc", grpc_port)
        assert _labels_match(service["spec"]["selector"],
                             deployment["spec"]["template"]["metadata"]["labels"])


_UNITS = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value) -> Decimal:
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return Decimal(number) * _UNITS[unit]


def test_every_container_has_resource_requests_and_limits(docs):
    for workload in _workloads(docs):
        spec = _pod_spec(workload)
        for container in _containers(workload):
            where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            for kind in ("cpu", "memory"):
                assert kind in requests and kind in limits, f"{where}: {kind} request and limit"
                assert _quantity(requests[kind]) <= _quantity(limits[kind]), where
            if "ephemeral-storage" in limits:
                # emptyDirs count against the pod's ephemeral storage: a limit below their size
                # limits evicts the pod before the volume is full.
                mounted = {m["name"] for m in container.get("volumeMounts", [])}
                size = sum(_quantity(v["emptyDir"].get("sizeLimit", 0))
                           for v in spec.get("volumes", [])
                           if "emptyDir" in v and v["name"] in mounted
                           and v["emptyDir"].get("medium") != "Memory")  # counts as memory
                assert size <= _quantity(limits["ephemeral-storage"]), where


def test_every_pod_meets_the_restricted_pod_security_standard(docs):
    """Non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, allowed
    volume types; and a read-only root filesystem with a writable /tmp."""
    for workload in _workloads(docs):
        spec = _pod_spec(workload)
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, workload["metadata"]["name"]
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        # The volume types the "restricted" Pod Security Standard allows.
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"configMap", "csi", "downwardAPI", "emptyDir",
                                              "ephemeral", "persistentVolumeClaim", "projected",
                                              "secret"}, volume
        mounts_writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v} | {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in _containers(workload):
            security = container.get("securityContext", {})
            assert security.get("readOnlyRootFilesystem") is True, container["name"]
            assert security.get("allowPrivilegeEscalation") is False, container["name"]
            assert security.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in mounts_writable, f"{container['name']}: writable /tmp"
        if workload["metadata"]["name"] in SERVICES:
            assert pod_security.get("runAsUser") == 10001  # the Dockerfile's user


def test_no_secret_is_rendered_and_every_secret_reference_is_lambdascope_secrets(docs):
    """(The TLS files are the one other Secret: cert-manager writes it from a Certificate.)"""
    assert not _of_kind(docs, "Secret"), "secrets are created by hand (README), never committed"
    issued = {c["spec"]["secretName"] for c in _of_kind(docs, "Certificate")}
    used = set()
    for workload in _workloads(docs):
        spec = _pod_spec(workload)
        for volume in spec.get("volumes", []):
            assert "secret" not in volume or volume["secret"]["secretName"] in {SECRET, *issued}
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                assert "secretRef" not in source or source["secretRef"]["name"] == SECRET
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == SECRET, f"{container['name']}: {env['name']}"
                    assert not ref.get("optional"), "a missing key must stop the pod, visibly"
                    used.add(ref["key"])
    assert used == SECRET_KEYS
    # The README's `kubectl create secret` creates every key the manifests read.
    readme = (K8S / "README.md").read_text()
    command = re.search(r"create secret generic " + SECRET + r"(.*?)(?:\n\n|```)",
                        readme, re.S)
    assert command, "deploy/k8s/README.md shows how to create the secret"
    assert set(re.findall(r"--from-literal=(\w+)=", command.group(1))) == SECRET_KEYS


def _container_env(docs, container: dict) -> dict[str, str]:
    """The variables a container starts with (secret values replaced by placeholders), in
    Kubernetes' order: envFrom sources (later ones win), then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "prefix" not in source
        if "configMapRef" in source:
            env.update(_named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update({key: "secret" for key in SECRET_KEYS})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = _named(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[item["name"]] = "secret"
    return env


def test_every_variable_a_lambdascope_container_reads_is_a_setting(docs):
    known = SETTINGS_KEYS | JOB_BACKEND_KEYS | LIBPQ_KEYS
    for workload, container in _lambdascope_containers(docs):
        unknown = set(_container_env(docs, container)) - known
        assert not unknown, f"{container['name']}: not lambdascope settings: {sorted(unknown)}"
    # The job-backend keys are documented where they are set.
    comments = "\n".join(line for line in (VARIANTS["gpu"] / "kustomization.yaml").read_text()
                         .splitlines() if line.strip().startswith("#"))
    for key in JOB_BACKEND_KEYS:
        assert key.removeprefix(config.ENV_PREFIX) in comments, f"{key}: document it"


def test_every_service_loads_settings_that_fit_its_pod(docs, monkeypatch):
    """What the manifests set, through lambdascope.config.load: values parse, the ports are the
    container's, the addresses name existing Services, the data directory is writable."""
    services = {s["metadata"]["name"]: s for s in _of_kind(docs, "Service")}
    for deployment in _of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        (container,) = _pod_spec(deployment)["containers"]
        for key in list(os.environ):
            if key.startswith(config.ENV_PREFIX):
                monkeypatch.delenv(key)
        for key, value in _container_env(docs, container).items():
            monkeypatch.setenv(key, value)
        settings = config.load(name)  # SystemExit on a value of the wrong type
        assert settings.host == "0.0.0.0", f"{name}: must listen on the pod's address"
        assert settings.port == _port(container, "grpc")["containerPort"]
        assert settings.metrics_port == _port(container, "metrics")["containerPort"]
        mounts = {pathlib.Path(m["mountPath"]) for m in container["volumeMounts"]}
        assert settings.data_dir in mounts, f"{name}: data dir on the read-only root"
        for peer, address in settings.endpoints.items():
            host, port = address.rsplit(":", 1)
            assert host in services and int(port) in {
                p["port"] for p in services[host]["spec"]["ports"]}, f"{name}: {peer}={address}"
        assert set(settings.endpoints) == set(SERVICES)
        assert settings.database.startswith("postgresql://") and ":" not in \
            settings.database.split("//")[1].split("@")[0], f"{name}: a password in the URL"
        # The admin key from the Secret, to the registry alone: the others act for their callers.
        assert settings.admin_key == ("secret" if name == "registry" else ""), name
        if name == "registry":
            assert settings.object_store.startswith("s3://")
            host, port = settings.s3_endpoint.rsplit(":", 1)
            assert host in services and settings.s3_access_key == settings.s3_secret_key == "secret"
        else:
            assert settings.worker_threads >= 1, f"{name}: threads from the CPU limit"
            cpus = _quantity(container["resources"]["limits"]["cpu"])
            assert settings.worker_threads * settings.max_concurrent_jobs <= cpus, name
    # One database per service: the trainer's and the estimator's job tables must not mix.
    urls = set()
    for deployment in _of_kind(docs, "Deployment"):
        (container,) = _pod_spec(deployment)["containers"]
        urls.add(_container_env(docs, container)["LAMBDASCOPE_DATABASE_URL"])
    assert len(urls) == len(SERVICES)


def test_gpus_only_on_the_jobs_of_the_gpu_overlay(variant, docs, monkeypatch):
    """No Deployment holds a GPU (the services only orchestrate); in the gpu overlay the Job the
    estimator builds from the overlay's settings asks for one on a GPU node."""
    for workload in _workloads(docs):
        name = workload["metadata"]["name"]
        spec = _pod_spec(workload)
        (container,) = spec["containers"]
        resources = container["resources"]
        assert GPU not in resources.get("limits", {}), name
        assert GPU not in resources.get("requests", {}), name
        assert GPU_NODE_LABEL not in spec.get("nodeSelector", {}), name
        assert not any(t.get("key") == GPU for t in spec.get("tolerations", [])), name
        assert not container["image"].endswith("-gpu"), name
    settings = _named(docs, "ConfigMap", "lambdascope-config")["data"]
    if variant != "gpu":
        assert not set(settings) & JOB_BACKEND_KEYS
        return
    assert settings["LAMBDASCOPE_JOB_BACKEND"] == "kubernetes"
    assert settings["LAMBDASCOPE_JOB_IMAGE"] == f"{IMAGE_PREFIX}worker:{__version__}-gpu"
    from kubernetes.client import ApiClient

    from lambdascope import backends

    for key in [k for k in os.environ if k.startswith("LAMBDASCOPE_")]:
        monkeypatch.delenv(key)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    job = ApiClient().sanitize_for_serialization(backends.build_job(
        "audit-0123abcd", "audit", "{}", config.load("estimator")))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"][GPU] == "1"
    assert pod["nodeSelector"] == {GPU_NODE_LABEL: "true"}
    assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert container["image"] == settings["LAMBDASCOPE_JOB_IMAGE"]


def test_dev_overlay_is_small():
    docs = _render("dev")
    for workload in _workloads(docs):
        assert workload["spec"].get("replicas", 1) == 1, workload["metadata"]["name"]
        for container in _containers(workload):
            assert _quantity(container["resources"]["limits"]["cpu"]) <= 2
            assert _quantity(container["resources"]["limits"]["memory"]) <= 4 * 2**30
    settings = _named(docs, "ConfigMap", "lambdascope-config")["data"]
    assert settings["LAMBDASCOPE_MAX_CONCURRENT_JOBS"] == "1"
    assert not _of_kind(docs, "PodDisruptionBudget") or all(
        "maxUnavailable" in p["spec"] for p in _of_kind(docs, "PodDisruptionBudget")), \
        "a minAvailable budget on a single replica blocks node drains"


# -- images -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Stage:
    name: str
    parent: str
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    expose: set[int] = dataclasses.field(default_factory=set)
    user: str | None = None
    stopsignal: str | None = None


@functools.cache
def _dockerfile() -> tuple[dict[str, Stage], dict[str, str], str]:
    """Stages by name (settings inherited from parents), global ARG defaults, the lock text."""
    text = DOCKERFILE.read_text()
    lock = re.search(r"^COPY <<EOF /opt/lambdascope/requirements.lock\n(.*?)^EOF$", text,
                     re.S | re.M)
    assert lock, "the Dockerfile carries the runtime lock as a COPY heredoc"
    body = text[:lock.start()] + text[lock.end():]
    body = re.sub(r"\\\n", " ", body)
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage = None
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.I)
            assert match, f"every stage is named: {line}"
            parent, name = match.groups()
            base = stages.get(parent)
            stage = dataclasses.replace(base, name=name, parent=parent) if base else \
                Stage(name, parent)
            stage.expose = set(stage.expose)
            stages[name] = stage
        elif stage is None and word == "ARG":
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(stage, word.lower(), json.loads(rest))
            if word == "ENTRYPOINT":
                stage.cmd = None  # a new ENTRYPOINT resets an inherited CMD
        elif word == "EXPOSE":
            stage.expose |= {int(p.split("/")[0]) for p in rest.split()}
        elif word == "USER":
            stage.user = rest.strip()
        elif word == "STOPSIGNAL":
            stage.stopsignal = rest.strip()
    return stages, args, lock.group(1)


def _image(reference: str) -> tuple[str, str]:
    name, _, tag = reference.rpartition(":")
    return name, tag


def test_every_lambdascope_image_is_a_dockerfile_target_running_its_service(docs, variant):
    stages, _, _ = _dockerfile()
    suffix = "-gpu" if variant == "gpu" else ""
    for workload, container in _lambdascope_containers(docs):
        name, tag = _image(container["image"])
        target = name.removeprefix(IMAGE_PREFIX)
        assert target in stages, f"{container['image']}: no Dockerfile target {target!r}"
        component = workload["metadata"]["name"]
        assert target == component
        assert tag == __version__, f"{container['image']}: tag"  # services run on CPU
        stage = stages[target]
        assert "command" not in container and "args" not in container, \
            "the image's ENTRYPOINT starts the service"
        assert stage.entrypoint == ["python", "-m", f"services.{component}"]
        ports = {p["containerPort"] for p in container["ports"]}
        assert ports <= stage.expose, f"{target}: EXPOSE {sorted(stage.expose)}"
        assert stage.user == "10001:10001" and stage.stopsignal == "SIGTERM"
        assert container["securityContext"]["readOnlyRootFilesystem"]
    job_image = _named(docs, "ConfigMap", "lambdascope-config")["data"].get(
        "LAMBDASCOPE_JOB_IMAGE")
    if job_image:
        name, tag = _image(job_image)
        assert name == IMAGE_PREFIX + "worker" and tag == __version__ + suffix
    for workload in _workloads(docs):
        for container in _containers(workload):
            name, tag = _image(container["image"])
            assert tag and tag != "latest", f"{container['image']}: pin a tag"


def test_dockerfile_targets_and_worker_stage():
    stages, args, _ = _dockerfile()
    assert {"base", "torch-cpu", "torch-gpu", "app", "registry", "trainer", "estimator",
            "worker"} <= set(stages)
    assert stages["base"].parent == "${PYTHON_IMAGE}"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert args["TORCH"] == "cpu" and stages["app"].parent == "torch-${TORCH}"
    worker = stages["worker"]
    assert worker.entrypoint == ["python", "-m"] and not worker.expose
    assert worker.user == "10001:10001" and worker.stopsignal == "SIGTERM"
    for module in ("services.trainer.worker", "services.estimator.worker"):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    readme = (K8S / "README.md").read_text()
    for target in ("registry", "trainer", "estimator", "worker"):
        assert re.search(rf"docker build .*--target {target} ", readme), target


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return pins


def test_the_images_lock_matches_requirements_and_is_closed():
    """The images install `--no-deps` from the Dockerfile's lock: it must pin what
    requirements.txt pins, and every dependency of what it installs."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    _, args, lock_text = _dockerfile()
    lock = _pins(lock_text)
    required = _pins((ROOT / "requirements.txt").read_text())
    assert required.pop("torch") == args["TORCH_VERSION"]
    assert "torch" not in lock, "torch comes from the PyTorch index of the variant"
    for name, version in required.items():
        if name in NOT_IN_IMAGES:
            assert name not in lock, f"{name} is not a runtime dependency"
        else:
            assert lock.get(name) == version, \
                f"{name}: requirements.txt pins {version}, the Dockerfile's lock {lock.get(name)}"
    environment = {**default_environment(), "python_version": "3.11",
                   "python_full_version": "3.11.0", "sys_platform": "linux",
                   "platform_system": "Linux", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    extras = {"psycopg": {"binary"}}  # requirements.txt: psycopg[binary]
    missing = []
    for name in [*lock, "torch"]:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: its dependencies cannot be checked
        for spec in requires:
            requirement = Requirement(spec)
            wanted = extras.get(name, set()) | {""}
            if requirement.marker and not any(
                    requirement.marker.evaluate({**environment, "extra": extra})
                    for extra in wanted):
                continue
            dependency = requirement.name.lower().replace("_", "-")
            if dependency != "torch" and dependency not in lock:
                missing.append(f"{name} needs {spec}")
            elif dependency in lock:
                assert requirement.specifier.contains(lock[dependency], prereleases=True), \
                    f"{name} needs {spec}, the lock has {lock[dependency]}"
    assert not missing, "add to the Dockerfile's lock:\n" + "\n".join(missing)


def test_dockerignore_keeps_the_context_small():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "bench/.venv-devinterp", "tests", "**/__pycache__"} <= ignored
    assert not ignored & {"lambdascope", "services", "pyproject.toml"}, "the image needs these"


# -- RBAC -------------------------------------------------------------------------------------

def test_the_jobs_controller_role_grants_exactly_what_the_job_backend_needs(docs):
    role = _named(docs, "Role", JOBS_CONTROLLER)
    granted = {(group, resource, verb) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
    assert granted == JOBS_CONTROLLER_RULES
    assert not _of_kind(docs, "ClusterRole") and not _of_kind(docs, "ClusterRoleBinding")
    binding = _named(docs, "RoleBinding", JOBS_CONTROLLER)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": JOBS_CONTROLLER}
    (subject,) = binding["subjects"]
    assert (subject["kind"], subject["name"]) == ("ServiceAccount", JOBS_CONTROLLER)
    assert subject.get("namespace") == binding["metadata"].get("namespace")
    _named(docs, "ServiceAccount", JOBS_CONTROLLER)
    for workload in _workloads(docs):
        spec = _pod_spec(workload)
        if workload["metadata"]["name"] in ("trainer", "estimator"):
            assert spec.get("serviceAccountName") == JOBS_CONTROLLER
        else:
            assert spec.get("serviceAccountName", "default") == "default"
            assert spec.get("automountServiceAccountToken") is False, \
                f"{workload['metadata']['name']} has no business with the Kubernetes API"


# -- network policies -------------------------------------------------------------------------

def _labels_match(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector: matchLabels, matchExpressions, or the map of a Service."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], \
            expression.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict
    ports: tuple = ()  # (name, number, protocol)

    def port(self, name: str) -> tuple[int, str]:
        return next((n, p) for pn, n, p in self.ports if pn == name)


def _pods(docs) -> dict[str, Pod]:
    namespace = next((d["metadata"]["namespace"] for d in docs
                      if "namespace" in d["metadata"]), "default")
    pods = {}
    for workload in _workloads(docs):
        ports = tuple((p.get("name"), p["containerPort"], p.get("protocol", "TCP"))
                      for c in _containers(workload) for p in c.get("ports", []))
        pods[workload["metadata"]["name"]] = Pod(
            workload["metadata"]["name"], namespace,
            workload["spec"]["template"]["metadata"]["labels"], ports)
    # Pods that are not in the manifests: a Job's worker (labels from the Job-backend
    # contract), any other client in the namespace, Prometheus, a pod elsewhere, cluster DNS.
    pods["worker"] = Pod("worker", namespace, WORKER_LABELS)
    pods["client"] = Pod("client", namespace, {"app": "notebook"})
    pods["prometheus"] = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    pods["stranger"] = Pod("stranger", "elsewhere", {"app": "notebook"})
    pods["dns"] = Pod("dns", "kube-system", {"k8s-app": "kube-dns"},
                      (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")))
    return pods


def _peer_matches(peer: dict, policy_namespace: str, pod: Pod) -> bool:
    assert "ipBlock" not in peer, "address-based rules are not expected here"
    if "namespaceSelector" in peer:
        if not _labels_match(peer["namespaceSelector"],
                             {"kubernetes.io/metadata.name": pod.namespace}):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return _labels_match(peer.get("podSelector", {}), pod.labels)


def _port_matches(rule_ports: list | None, destination: Pod, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            named = [n for pn, n, p in destination.ports if pn == wanted and p == protocol]
            if port in named:
                return True
        elif wanted <= port <= item.get("endPort", wanted):
            return True
    return False


def _policies(docs) -> list[dict]:
    """The NetworkPolicies, each with the namespace it will live in."""
    namespace = _pods(docs)["client"].namespace
    return [{**p, "metadata": {"namespace": namespace, **p["metadata"]}}
            for p in _of_kind(docs, "NetworkPolicy")]


def _allowed(policies: list[dict], source: Pod, destination: Pod, port: int,
             protocol: str = "TCP") -> bool:
    """Whether the NetworkPolicies let `source` open a connection to `destination`:`port`."""
    def selecting(pod: Pod, direction: str) -> list[dict]:
        found = []
        for policy in policies:
            if policy["metadata"]["namespace"] != pod.namespace:
                continue
            if not _labels_match(policy["spec"]["podSelector"], pod.labels):
                continue
            types = policy["spec"].get("policyTypes") or (
                ["Ingress"] + (["Egress"] if "egress" in policy["spec"] else []))
            if direction in types:
                found.append(policy)
        return found

    def admits(pod: Pod, direction: str, other: Pod) -> bool:
        relevant = selecting(pod, direction)
        if not relevant:
            return True  # not isolated in this direction
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in relevant:
            namespace = policy["metadata"]["namespace"]
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if peers and not any(_peer_matches(p, namespace, other) for p in peers):
                    continue
                if _port_matches(rule.get("ports"), destination, port, protocol):
                    return True
        return False

    return admits(source, "Egress", destination) and admits(destination, "Ingress", source)


def test_network_policies_open_exactly_the_intended_paths(docs):
    policies = _policies(docs)
    pods = _pods(docs)
    grpc, metrics = 50051, 9090
    expected = {
        # registry <- trainer, estimator, job workers
        ("trainer", "registry", grpc): True, ("estimator", "registry", grpc): True,
        ("worker", "registry", grpc): True, ("client", "registry", grpc): False,
        ("minio", "registry", grpc): False, ("stranger", "registry", grpc): False,
        ("trainer", "registry", metrics): False,
        # trainer, estimator <- any client in the namespace, on gRPC only
        ("client", "trainer", grpc): True, ("client", "estimator", grpc): True,
        ("worker", "estimator", grpc): False,  # workers talk to the registry only
        ("stranger", "trainer", grpc): False, ("client", "trainer", metrics): False,
        # postgres <- the services that keep their metadata there
        ("registry", "postgres", 5432): True, ("trainer", "postgres", 5432): True,
        ("estimator", "postgres", 5432): True, ("worker", "postgres", 5432): False,
        ("client", "postgres", 5432): False, ("minio", "postgres", 5432): False,
        # minio <- registry, workers (job pods, or inside the trainer and estimator pods)
        ("registry", "minio", 9000): True, ("worker", "minio", 9000): True,
        ("trainer", "minio", 9000): True, ("estimator", "minio", 9000): True,
        ("client", "minio", 9000): False, ("stranger", "minio", 9000): False,
        ("worker", "minio", 9001): False, ("trainer", "minio", 9001): False,
        # Prometheus (namespace monitoring) -> the metrics ports only
        ("prometheus", "registry", metrics): True, ("prometheus", "trainer", metrics): True,
        ("prometheus", "estimator", metrics): True, ("prometheus", "registry", grpc): False,
        ("stranger", "registry", metrics): False, ("prometheus", "postgres", 5432): False,
    }
    wrong = [f"{src} -> {dst}:{port} should be {'open' if want else 'closed'}"
             for (src, dst, port), want in expected.items()
             if _allowed(policies, pods[src], pods[dst], port) != want]
    assert not wrong, "\n".join(wrong)


def test_job_workers_reach_only_the_registry_minio_and_dns(docs):
    policies = _policies(docs)
    pods = _pods(docs)
    worker = pods["worker"]
    egress = [p for p in policies if _labels_match(p["spec"]["podSelector"], worker.labels)
              and "Egress" in p["spec"].get("policyTypes", [])]
    assert egress, "no NetworkPolicy restricts the workers' egress"
    for policy in egress:
        for rule in policy["spec"]["egress"]:
            assert rule.get("to") and rule.get("ports"), \
                "every egress rule names its peers and ports"
    reachable = {(name, port, protocol)
                 for name, pod in pods.items() if name != "worker"
                 for (_, port, protocol) in pod.ports
                 if _allowed(policies, worker, pod, port, protocol)}
    assert reachable == {("registry", 50051, "TCP"), ("minio", 9000, "TCP"),
                         ("dns", 53, "UDP"), ("dns", 53, "TCP")}
    # ... and nothing outside the manifests: any other pod, another namespace, another port.
    for name in ("client", "prometheus", "stranger"):
        assert not _allowed(policies, worker, pods[name], 443)
    assert not _allowed(policies, worker, pods["registry"], 9090)


# -- Grafana ----------------------------------------------------------------------------------

def test_dashboards_are_provisioned_for_the_grafana_sidecar(docs):
    dashboards = _named(docs, "ConfigMap", "lambdascope-dashboards")  # no hash suffix
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name for p in (K8S / "base" / "dashboards").glob("*.json")}
    assert set(dashboards["data"]) == files >= {"overview.json", "audits.json", "trainer.json"}
    for key, text in dashboards["data"].items():
        dashboard = json.loads(text)
        assert dashboard.get("title"), f"{key}: a dashboard needs a title"
        assert isinstance(dashboard.get("panels", []), list), key
    # `kubectl apply` (client side) keeps the whole object in an annotation of at most 256 KiB.
    size = len(json.dumps(dashboards).encode())
    assert size < 256 * 1024, f"{size} bytes: split the dashboards or apply --server-side"


def test_under_tls_the_certificate_covers_every_address_and_is_mounted_where_it_is_read(
        variant, docs, monkeypatch):
    """cert-manager's resources (no schema here): the services' Certificate names every host
    the services address each other by, serves and authenticates clients, is issued by an Issuer
    of the overlay, and its Secret is mounted where the TLS settings read their files."""
    certificates = {c["metadata"]["name"]: c for c in _of_kind(docs, "Certificate")}
    if variant != "tls":
        assert not certificates
        return
    issuers = {i["metadata"]["name"]: i for i in _of_kind(docs, "Issuer")}
    for cert in certificates.values():
        assert cert["apiVersion"] == "cert-manager.io/v1"
        assert cert["spec"]["issuerRef"]["name"] in issuers
    for issuer in issuers.values():
        if "ca" in issuer["spec"]:
            assert issuer["spec"]["ca"]["secretName"] in {
                c["spec"]["secretName"] for c in certificates.values() if c["spec"].get("isCA")}
    for deployment in _of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        (container,) = _pod_spec(deployment)["containers"]
        for key in [k for k in os.environ if k.startswith(config.ENV_PREFIX)]:
            monkeypatch.delenv(key)
        for key, value in _container_env(docs, container).items():
            monkeypatch.setenv(key, value)
        settings = config.load(name)
        volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
        mounted = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        for path in (settings.tls_cert, settings.tls_key, settings.tls_ca, settings.tls_client_ca,
                     settings.tls_client_cert, settings.tls_client_key):
            directory, file = path.rsplit("/", 1)
            secret = mounted[directory]["secret"]["secretName"]
            (cert,) = [c for c in certificates.values() if c["spec"]["secretName"] == secret]
            assert file in {"tls.crt", "tls.key", "ca.crt"}, path
        assert {"server auth", "client auth"} <= set(cert["spec"]["usages"]), name
        hosts = {address.rsplit(":", 1)[0] for address in settings.endpoints.values()}
        assert hosts <= set(cert["spec"]["dnsNames"]), f"{name}: {hosts}"
