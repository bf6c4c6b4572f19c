"""Fixtures of the enrich tests: per-run topics and app ids, the service as a subprocess, Triton on free ports."""

import pytest

from enrich.testing import EnrichProcess, running_triton
from platform_common.kafka import Publisher
from platform_common.settings import CommonSettings


@pytest.fixture
def common_settings() -> CommonSettings:
    return CommonSettings(service_name="enrich-tests")


@pytest.fixture
def enrich_process(tmp_path, run_id):
    """A factory: each call gives a not yet started EnrichProcess; all are stopped at the end."""
    made: list[EnrichProcess] = []

    def make(**env: str) -> EnrichProcess:
        made.append(EnrichProcess(f"{run_id}{len(made)}", tmp_path, **env))
        return made[-1]

    yield make
    for p in made:
        p.stop()
        p.cleanup()


@pytest.fixture
async def publisher(common_settings):
    pub = Publisher(common_settings)
    await pub.start()
    yield pub
    await pub.stop()


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    with running_triton(tmp_path_factory.mktemp("triton")) as address:
        yield address
