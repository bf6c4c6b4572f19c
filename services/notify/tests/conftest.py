"""notify against the real Kafka, registry and PostgreSQL, with the local PagerDuty/Slack receivers in-process."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from notify.app import Notify
from notify.dev_receivers import DevReceivers
from notify.routing import RoutingConfig
from notify.settings import NotifySettings
from platform_common.auth import KeyStore, make_key
from platform_common.kafka import ANOMALIES, Publisher, ensure_topics
from platform_common.testing import drop_topics
from support.authz import Keys

PD_KEY = "R0UTINGKEY0123456789abcdef012345"  # PagerDuty integration keys are 32 characters

ROUTES = """
receivers:
  - {name: pd, type: pagerduty, routing_key_env: NOTIFY_TEST_PD_KEY}
  - {name: slack-ok, type: slack, webhook_url_env: NOTIFY_TEST_SLACK_OK, rate_limit: {max_rate: 50, period_seconds: 1}}
  - {name: slack-broken, type: slack, webhook_url_env: NOTIFY_TEST_SLACK_BROKEN}
route:
  receiver: slack-ok
  group_by: [stream_id]
  group_wait: 1500ms
  group_interval: 2s
  routes:
    - matchers: ['severity=~"critical|error"']
      receiver: pd
      continue: true
    - matchers: ['stream=~"broken-.*"']
      receiver: slack-broken
    - receiver: slack-ok  # no matchers: everything else (a parent whose child matched does not handle it)
"""


def make_alert(stream: str, n: int = 0, *, action: str = "trigger", severity: str = "critical",
               dedup_key: str | None = None, **overrides) -> dict:
    now = int(time.time() * 1000)
    return {
        "alert_id": uuid.uuid4().hex, "dedup_key": dedup_key or f"{stream}:latency_ms:{n}", "action": action,
        "stream_id": stream, "source": "demo", "tenant": "acme", "metric": "latency_ms",
        "value": 250.0 + n, "score": 4.2, "threshold": 120.0, "severity": severity,
        "window_start": now - 60_000, "window_end": now, "detector": "lstm-autoencoder", "model_version": "v3",
        "event_id": f"evt-{n}", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "attributes": {"region": "eu"}, "created_at": now, **overrides,
    }


@pytest.fixture(name="make_alert")
def make_alert_fixture():
    return make_alert


@pytest.fixture
def pd_key() -> str:
    return PD_KEY


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    return wait_for


async def wait_for(condition, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
async def receivers(monkeypatch):
    dev = DevReceivers()
    port = await dev.start()
    monkeypatch.setenv("NOTIFY_TEST_PD_KEY", PD_KEY)
    monkeypatch.setenv("NOTIFY_TEST_SLACK_OK", f"http://127.0.0.1:{port}/slack/ok")
    monkeypatch.setenv("NOTIFY_TEST_SLACK_BROKEN", f"http://127.0.0.1:{port}/slack/broken")
    yield dev
    await dev.stop()


@pytest.fixture
async def notify_settings(run_id, receivers, tmp_path: Path):
    """Per-run topics, consumer group and PostgreSQL schema; dropped afterwards."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    settings = NotifySettings(
        service_name="notify-tests", notify_topics=[f"test.notify.alerts.{run_id}"],
        notify_notifications_topic=f"test.notify.outcomes.{run_id}", notify_group_id=f"notify-test-{run_id}",
        notify_db_schema=f"notify_test_{run_id}", notify_routes_file=routes,
        notify_pagerduty_url=f"http://127.0.0.1:{receivers.port}/v2/enqueue",
        notify_backoff_initial=0.3, notify_backoff_max=2.0, notify_max_attempts=5, notify_poll_interval=0.05)
    await ensure_topics(settings, settings.notify_topics)
    yield settings
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute(f"drop schema if exists {settings.notify_db_schema} cascade")
    await conn.close()
    drop_topics(settings, [*settings.notify_topics, settings.notify_notifications_topic])


class ApiKeys:
    """Tokens by name: `acme` (write) and `acme-read` for the test alerts' tenant, `globex` (write) for another
    tenant, and the authorization matrix's keys (support.authz.Keys); `store` accepts them all."""

    def __init__(self):
        matrix = Keys.create()
        self.matrix = matrix
        self.tokens, entries = {}, []
        for name, tenant, roles in (("acme", "acme", ["write"]), ("acme-read", "acme", ["read"]),
                                    ("globex", "globex", ["write"])):
            self.tokens[name], entry = make_key(tenant, roles, key_id=name.replace("-", ""))
            entries.append(entry)
        self.store = KeyStore({**matrix.store.entries, **KeyStore.from_entries(entries).entries})

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@pytest.fixture(scope="session")
def api_keys() -> ApiKeys:
    return ApiKeys()


@pytest.fixture
async def notify(notify_settings, api_keys):
    """The service running in this event loop (its HTTP API through `api`)."""
    service = Notify(notify_settings, RoutingConfig.load(notify_settings.notify_routes_file), api_keys.store)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def api(notify, api_keys):
    """notify's API with a write key of tenant acme (the tenant of `make_alert`'s alerts)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=notify.app), base_url="http://notify",
                                 headers=api_keys.headers("acme")) as client:
        yield client


@pytest.fixture
async def anonymous(notify):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=notify.app), base_url="http://notify") as client:
        yield client


@pytest.fixture
async def produce(notify_settings):
    """Publishes alerts to the run's alert topic with platform_common's Publisher."""
    publisher = Publisher(notify_settings)
    await publisher.start()
    topic = notify_settings.notify_topics[0]

    async def send(*alerts: dict) -> None:
        for alert in alerts:
            await publisher.publish(topic, alert["stream_id"], alert, schema_of=ANOMALIES)
    yield send
    await publisher.stop()


@pytest.fixture
async def db(notify_settings):
    conn = await asyncpg.connect(notify_settings.database_url)
    yield conn
    await conn.close()
