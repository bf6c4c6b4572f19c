"""Kafka, Redis and PostgreSQL go away and come back while the services run: nothing acknowledged is lost, the
services say they are not ready while a dependency is down, and they recover without a restart."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.chaos import record
from support.platform import Platform, Sender, metric_payloads
from support.private_kafka import PrivateKafka

from platform_common.settings import CommonSettings
from platform_common.testing import decode_avro, read_messages

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.py"


def stack(*args: str) -> None:
    subprocess.run([sys.executable, str(STACK), *args], check=True, capture_output=True, timeout=180)


def ready(platform: Platform, name: str) -> int:
    return httpx.get(f"http://127.0.0.1:{platform.ports[name]}/readyz", timeout=5).status_code


def wait_ready(platform: Platform, name: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready(platform, name) == 200:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not recover in {timeout}s")


@pytest.fixture
def broker():
    with PrivateKafka() as kafka:
        yield kafka


@pytest.mark.chaos
def test_broker_restart_loses_nothing_acknowledged(broker, start_platform, run_id):
    platform = start_platform(("ingest-webhook", "enrich"), KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers)
    sender = Sender(platform.ports["ingest-webhook"])
    payloads = metric_payloads(run_id, streams=4, points=300)
    statuses_while_down: list[int] = []
    flow = sender.flow(payloads, rate=60)
    time.sleep(5)
    broker.stop()
    down_since = time.monotonic()
    with httpx.Client(timeout=10) as client:  # probes during the outage: 503, never 202
        while time.monotonic() - down_since < 10:
            statuses_while_down.append(sender.post(client, {**payloads[0], "id": f"probe-{time.time_ns()}"},
                                                   attempts=1) or 503)
    broker.start()
    recovery = wait_ready(platform, "ingest-webhook")
    flow.join()

    settings = CommonSettings(kafka_bootstrap_servers=broker.bootstrap_servers)
    enriched = read_messages(settings, platform.topics["events.enriched.v1"], len(sender.accepted), timeout=90)
    stored = {decode_avro(settings, m)["event_id"] for m in enriched}
    lost = sender.accepted - stored
    record(fault="Kafka killed for 10 s", sent=sender.sent, accepted=len(sender.accepted),
           stored=len(stored & sender.accepted), lost=len(lost), duplicated=len(enriched) - len(stored),
           recovery_s=recovery)
    assert 202 not in statuses_while_down
    assert not lost, platform.logs()


def test_redis_restart_ingest_refuses_then_recovers(start_platform, run_id):
    """The documented choice: without Redis, replay protection cannot be checked, so ingest answers 503
    (the publisher retries) rather than risk publishing a replay twice."""
    platform = start_platform(("ingest-webhook",))
    sender = Sender(platform.ports["ingest-webhook"])
    payloads = metric_payloads(run_id, streams=1, points=3)
    with httpx.Client(timeout=10) as client:
        assert sender.post(client, payloads[0], attempts=1) == 202
        stack("down", "redis")
        try:
            answer = client.post(f"http://127.0.0.1:{platform.ports['ingest-webhook']}/webhooks/demo",
                                 content="{}", headers={"content-type": "application/json"})
            assert answer.status_code in (401, 503)  # unsigned: refused before Redis is needed
            assert sender.post(client, payloads[1], attempts=1) is None
            assert sender.refused.get(503) == 1
            assert ready(platform, "ingest-webhook") == 503
        finally:
            stack("up", "redis")
        recovery = wait_ready(platform, "ingest-webhook")
        assert sender.post(client, payloads[1], attempts=10) == 202
    record(fault="Redis stopped", sent=sender.sent, accepted=len(sender.accepted), stored="-", lost=0,
           duplicated=0, recovery_s=recovery)


def test_postgres_restart_services_report_not_ready_and_recover(start_platform):
    platform = start_platform(("notify", "anomaly"))
    stack("down", "postgres")
    try:
        deadline = time.monotonic() + 20
        states = {}
        while time.monotonic() < deadline and set(states.values()) != {503}:
            states = {name: ready(platform, name) for name in ("notify", "anomaly")}
            time.sleep(0.5)
        assert set(states.values()) == {503}, states
    finally:
        stack("up", "postgres")
    recovery = max(wait_ready(platform, name) for name in ("notify", "anomaly"))
    record(fault="PostgreSQL stopped", sent=0, accepted=0, stored="-", lost=0, duplicated=0,
           recovery_s=recovery)
