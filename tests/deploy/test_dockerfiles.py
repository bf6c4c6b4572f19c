"""deploy/docker/<service>.Dockerfile, parsed with Docker's own parser (the `dockerfile` wheel wraps BuildKit's)."""

import fnmatch
import re
import tomllib
from pathlib import Path

import dockerfile

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
ML_SERVICES = {"anomaly", "rag", "reports"}
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def commands(service) -> list:
    path = DOCKER / f"{service.name}.Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return list(dockerfile.parse_file(str(path)))


def stages(cmds) -> list[list]:
    """The instructions of each build stage, in order (what precedes the first FROM is the global ARGs)."""
    result: list[list] = []
    for cmd in cmds:
        if cmd.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(cmd)
    return result


def arg_defaults(cmds) -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in cmds if c.cmd == "ARG" and "=" in c.value[0])


def test_multi_stage_on_python_311_slim(service):
    cmds = commands(service)
    built = stages(cmds)
    assert len(built) >= 2, "build dependencies stay in a build stage"
    base = built[-1][0].value[0]
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: arg_defaults(cmds)[m.group(1)], base)
    assert base == "python:3.11-slim"
    assert any(c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags) for c in built[-1])


def test_runs_as_a_non_root_user(service):
    final = stages(commands(service))[-1]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_every_copied_path_exists_in_the_repository_and_is_not_ignored(service):
    ignore = DOCKER / f"{service.name}.Dockerfile.dockerignore"
    patterns = [line.removeprefix("**/") for line in ignore.read_text().splitlines() if line and line[0] != "#"]
    for cmd in commands(service):
        if cmd.cmd in {"COPY", "ADD"} and not any(f.startswith("--from=") for f in cmd.flags):
            for source in cmd.value[:-1]:
                assert (ROOT / source).exists(), f"{service.name}: COPY {source}: no such path from the repo root"
                ignored = [p for p in patterns if any(fnmatch.fnmatch(part, p) for part in Path(source).parts)]
                assert not ignored, f"{service.name}: COPY {source} is excluded by {ignored} in {ignore.name}"


def test_installs_libs_common_then_the_service_and_runs_its_module(service):
    cmds = commands(service)
    copies = [c.value[0] for c in cmds if c.cmd == "COPY" and not c.flags]
    assert copies.index("libs/common") < copies.index(f"services/{service.name}")
    runs = [" ".join(c.value) for c in cmds if c.cmd == "RUN"]
    assert any("pip install" in r and "/libs/common" in r for r in runs)
    assert any("pip install" in r and f"/services/{service.name}" in r for r in runs)
    cmd = [c for c in cmds if c.cmd == "CMD"][-1]
    assert cmd.json and list(cmd.value) == ["python", "-m", service.package]
    assert (service.folder / service.package / "__main__.py").is_file(), f"python -m {service.package} has no __main__"


def test_exposes_and_health_checks_the_service_port(service):
    cmds = commands(service)
    assert [c.value[0] for c in cmds if c.cmd == "EXPOSE"] == [str(service.port)]
    health = " ".join(next(c for c in cmds if c.cmd == "HEALTHCHECK").value)
    assert f"127.0.0.1:{service.port}/readyz" in health


def test_config_files_are_copied_where_the_settings_look(service):
    """An env var pointing into /etc/platform must name a file the image copies there."""
    cmds = commands(service)
    copied = {c.value[-1] for c in cmds if c.cmd == "COPY"}
    env = " ".join(" ".join(c.value) for c in cmds if c.cmd == "ENV")
    for path in re.findall(r"(/etc/platform/\S+)", env):
        assert path in copied, f"{service.name}: {path} is configured but never copied"


def needs_torch(service) -> bool:
    pyproject = tomllib.loads((service.folder / "pyproject.toml").read_text())
    dependencies = " ".join(pyproject["project"]["dependencies"])
    return "torch" in dependencies or "platform-common[llm]" in dependencies  # the llm extra brings torch


def test_only_the_ml_services_get_torch_from_the_cpu_index(service):
    cmds = commands(service)
    assert needs_torch(service) == (service.name in ML_SERVICES)
    if service.name in ML_SERVICES:
        assert arg_defaults(cmds).get("TORCH_INDEX_URL") == CPU_TORCH_INDEX
        runs = [" ".join(c.value) for c in cmds if c.cmd == "RUN"]
        torch_at = next(i for i, r in enumerate(runs) if "TORCH_INDEX_URL" in r and "torch" in r)
        service_at = next(i for i, r in enumerate(runs) if f"/services/{service.name}" in r)
        assert torch_at < service_at, "the CPU torch must be installed before the service resolves its dependencies"
    else:
        assert "torch" not in (DOCKER / f"{service.name}.Dockerfile").read_text().lower()
