"""The stack's command line: idempotent `up`, `down` that leaves no process, a warm `up` within two minutes, and
one-line errors that say what to do."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"


def stack(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STACK), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_up_on_a_running_stack_is_quick_and_prints_the_addresses():
    started = time.monotonic()
    result = stack("up")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 120
    for address in ("localhost:9092", "http://localhost:8081", "localhost:5432", "localhost:6379",
                    "http://localhost:8000", "http://localhost:8005"):
        assert address in result.stdout


def test_a_taken_port_is_a_one_line_error(tmp_path):
    # a second stack in another data folder finds the running stack's ports taken
    result = stack("up", env={"STACK_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "port 5432 is taken", "DATABASE_URL")


def test_missing_java_is_a_one_line_error(tmp_path):
    env = {"STACK_DATA_DIR": str(tmp_path), "PATH": str(tmp_path), "JAVA_HOME": "",
           "DATABASE_URL": "postgresql://elsewhere", "REDIS_URL": "redis://elsewhere"}
    assert_one_line_error(stack("up", env=env), "Java 17+ is required", "install")


def test_unreachable_registry_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "platform_common", "register-schemas"], capture_output=True,
                            text=True, env={**os.environ, "SCHEMA_REGISTRY_URL": "http://127.0.0.1:9/apis/ccompat/v7"})
    assert_one_line_error(result, "unreachable", "make up")


def test_a_registry_url_that_is_not_a_registry_api_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "platform_common", "register-schemas"], capture_output=True,
                            text=True, env={**os.environ, "SCHEMA_REGISTRY_URL": "http://localhost:8081/not-the-api"})
    assert_one_line_error(result, "answered 404", "SCHEMA_REGISTRY_URL")


def stack_processes() -> set[int]:
    """Live processes of the local stack: its parts' pid files and every process whose command line or working
    folder is in the stack's data folder (PostgreSQL's backends, the registry's JVM, ...)."""
    data = Path(os.environ.get("STACK_DATA_DIR", ROOT / ".data")).resolve()
    found = set()
    for pidfile in (data / "run").glob("*.pid"):
        pid = int(pidfile.read_text())
        if Path(f"/proc/{pid}").exists():
            found.add(pid)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(data) in cmdline or cwd.startswith(str(data))):
            found.add(int(proc.name))
    return found


@pytest.mark.skipif(any(os.environ.get(v) for v in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "DATABASE_URL",
                                                    "REDIS_URL")), reason="an external server is configured")
def test_down_leaves_no_process_and_a_warm_up_is_ready_within_two_minutes():
    assert stack_processes(), "the stack is not running"
    result = stack("down")
    assert result.returncode == 0, result.stderr
    left = stack_processes()
    started = time.monotonic()
    up = stack("up")  # the other tests need the stack again, whatever happened above
    warm = time.monotonic() - started
    assert not left, f"processes of the stack still running after down: {sorted(left)}"
    assert up.returncode == 0, up.stderr
    assert warm < 120, f"make up on a machine where it ran before took {warm:.0f}s"
    assert stack("status").returncode == 0
