"""What the deployment files are checked against: the services' own code (ports, packages, metrics, topics)."""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXPECTED = {"ingest-webhook", "enrich", "anomaly", "rag", "reports", "notify"}


@dataclass(frozen=True)
class Service:
    name: str      # folder under services/, image and Kubernetes name
    package: str   # `python -m <package>`
    port: int      # default of the service's `<prefix>_port` setting

    @property
    def folder(self) -> Path:
        return ROOT / "services" / self.name


def _services() -> list[Service]:
    found = []
    for settings in sorted(ROOT.glob("services/*/*/settings.py")):
        match = re.search(r"^\s+\w+_port: int = (\d+)", settings.read_text(), re.M)
        if match:
            found.append(Service(settings.parents[1].name, settings.parent.name, int(match.group(1))))
    return found


SERVICES = _services()


def pytest_generate_tests(metafunc):
    """A test that takes `service` runs once per service of services/."""
    if "service" in metafunc.fixturenames:
        assert {s.name for s in SERVICES} >= EXPECTED, "a service folder or its settings.py port is missing"
        metafunc.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])


@pytest.fixture(scope="session")
def services() -> dict[str, Service]:
    assert {s.name for s in SERVICES} >= EXPECTED
    return {s.name: s for s in SERVICES}


def _exposed_names(kind: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for one metric."""
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "Summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


@pytest.fixture(scope="session")
def code_metrics() -> set[str]:
    """Every series name the services and libs/common define (prometheus_client constructors, found in the AST)."""
    names: set[str] = set()
    sources = [*ROOT.glob("libs/common/platform_common/**/*.py"), *ROOT.glob("services/*/*/**/*.py")]
    for path in sources:
        if "tests" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in {"Counter", "Gauge", "Histogram", "Summary"}
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                names |= _exposed_names(node.func.id, node.args[0].value)
    assert "kafka_messages_published_total" in names, "the metrics of platform_common.kafka were not found"
    return names


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
