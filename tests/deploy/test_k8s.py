"""deploy/k8s: every manifest checked against the Kubernetes JSON schemas (kubernetes-validate ships them), the KEDA
ScaledObjects against tests/deploy/keda-scaledobject.schema.json, and both against what the services do."""

import functools
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from platform_common import kafka

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
# scaled on lag by KEDA; the singletons run one replica (notify's outbox dispatcher, reports' schedule)
CONSUMERS = {"enrich", "anomaly", "rag"}
SINGLETONS = {"notify", "reports"}
TOPICS = {kafka.RAW, kafka.ENRICHED, kafka.ANOMALIES, kafka.CONTEXTUALIZED, kafka.DOCUMENTS, kafka.REPORTS,
          kafka.NOTIFICATIONS}


@functools.cache
def manifests() -> tuple[dict, ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return tuple(docs)


def of_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def validate(doc: dict) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        schema = json.loads((Path(__file__).parent / "keda-scaledobject.schema.json").read_text())
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_manifest_matches_its_schema():
    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject"}
    for doc in docs:
        validate(doc)


def test_the_validators_reject_a_broken_manifest():
    deployment = of_kind("Deployment")["enrich"]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8001]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    scaled = json.loads(json.dumps(of_kind("ScaledObject")["enrich"]))
    del scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_the_kustomization_lists_every_file_and_its_config_sources_exist():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.split("=", 1)[-1]).is_file(), entry


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
def test_the_rendered_kustomization_is_valid():
    rendered = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S)],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        validate(doc)
        if doc["kind"] == "Deployment":
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in generated


def test_each_service_deployment_probes_and_bounds_resources(service):
    deployment = of_kind("Deployment")[service.name]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith(f"platform/{service.name}:")
    assert container["ports"][0]["containerPort"] == service.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{service.name}: {kind}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "platform-env"} in [e.get("configMapRef") for e in container["envFrom"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(service.port)
    assert of_kind("Service")[service.name]["spec"]["ports"][0]["port"] == service.port


def test_each_service_has_a_disruption_budget(service):
    selectors = [p["spec"]["selector"]["matchLabels"] for p in of_kind("PodDisruptionBudget").values()]
    assert of_kind("Deployment")[service.name]["spec"]["selector"]["matchLabels"] in selectors


def test_mounted_config_files_are_where_the_settings_look():
    for deployment in of_kind("Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        for env in container.get("env", []):
            if str(env.get("value", "")).startswith("/etc/platform/"):
                assert mounts.get("config") == "/etc/platform"


def test_secrets_are_referenced_by_name_and_documented():
    documented = (ROOT / "docs" / "deploy.md").read_text()
    names = set()
    for deployment in of_kind("Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e}
    assert {"webhook-secrets", "notify-receivers"} <= names
    assert not of_kind("Secret"), "secret values do not belong in the repository"
    for name in names:
        assert name in documented, f"docs/deploy.md does not say how to create the secret {name}"


def test_consumers_scale_on_the_lag_of_their_own_group():
    scaled = of_kind("ScaledObject")
    env = of_kind("ConfigMap")["platform-env"]["data"]
    assert set(scaled) == CONSUMERS
    for name, obj in scaled.items():
        assert obj["spec"]["scaleTargetRef"]["name"] in of_kind("Deployment")
        assert obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"] <= int(env["KAFKA_PARTITIONS"])
        source = " ".join(p.read_text() for p in (ROOT / "services" / name).glob("*/*.py"))
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
            assert meta["topic"] in TOPICS
            # the group is the service's own: its settings default, or built from it (rag-<role>)
            assert f'"{meta["consumerGroup"]}"' in source or f'"{meta["consumerGroup"].split("-")[0]}"' in source


def test_singletons_run_one_replica_that_is_replaced_not_rolled():
    deployments = of_kind("Deployment")
    for name in SINGLETONS:
        spec = deployments[name]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name
    assert not SINGLETONS & {o["spec"]["scaleTargetRef"]["name"] for o in of_kind("ScaledObject").values()}
    assert not SINGLETONS & {h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HorizontalPodAutoscaler").values()}


def test_the_shared_environment_names_every_dependency():
    env = of_kind("ConfigMap")["platform-env"]["data"]
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "DATABASE_URL", "REDIS_URL",
                "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert env.get(key), key
    assert env["SCHEMA_REGISTRY_URL"].endswith("/apis/ccompat/v7") or "8081" in env["SCHEMA_REGISTRY_URL"]
    assert ":" not in env["DATABASE_URL"].split("//", 1)[1].split("@")[0], "the password belongs in a Secret"
