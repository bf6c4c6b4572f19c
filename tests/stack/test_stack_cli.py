"""The stack's command line: idempotent `up`, and one-line errors that say what to do."""

import os
import subprocess
import sys
import time
from pathlib import Path

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
