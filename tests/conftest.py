import pytest
from support.platform import Platform


@pytest.fixture
def start_platform(tmp_path, run_id):
    """Starts services as processes on per-run topics and schemas: `start_platform(("enrich", ...), **env)`;
    stops them (and the local receivers) when the test ends."""
    started: list[Platform] = []

    def start(services: tuple[str, ...], **extra_env: str) -> Platform:
        platform = Platform(run_id, tmp_path, services, extra_env)
        started.append(platform)
        return platform.start()

    yield start
    for platform in started:
        platform.stop()
