"""Fixtures shared by every test folder: the real local stack started by `make up`."""

import uuid

import pytest

from platform_common.settings import CommonSettings


def pytest_addoption(parser):
    parser.addoption("--chaos", action="store_true", help="also run the long reliability tests (`make chaos`)")


@pytest.fixture
def settings() -> CommonSettings:
    return CommonSettings(service_name="tests")


@pytest.fixture
def run_id() -> str:
    """A suffix that keeps one test's topics and groups apart from every other test's."""
    return uuid.uuid4().hex[:10]
