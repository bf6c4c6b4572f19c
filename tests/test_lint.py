"""ruff and mypy over libs/ and services/ (issue 17): `make test` fails on a lint or type error like on any other.

The rules and settings are in pyproject.toml ([tool.ruff], [tool.mypy]); the tool versions are pinned in
deploy/local/requirements.txt. mypy checks the packages (libs/common's platform_common and each service's package),
not their tests or bench scripts, through the mypy_path of pyproject.toml; its cache (.mypy_cache) keeps a re-run
to a few seconds.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("platform_common", "ingest_webhook", "enrich", "anomaly", "rag", "reports", "notify")

RUFF = [sys.executable, "-m", "ruff", "check", "--no-fix", "--output-format", "concise", "libs", "services"]
MYPY = [sys.executable, "-m", "mypy", *(arg for package in PACKAGES for arg in ("-p", package))]


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    done = run(RUFF)
    assert done.returncode == 0, f"{' '.join(RUFF[1:])} failed:\n{done.stdout}{done.stderr}"


def test_mypy_is_clean():
    done = run(MYPY)
    assert done.returncode == 0, f"{' '.join(MYPY[1:])} failed:\n{done.stdout}{done.stderr}"
