"""Kafka, Redis and PostgreSQL go away and come back while the services run: nothing acknowledged is lost, the
services say they are not ready while a dependency is down, and they recover without a restart."""

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from support.chaos import record
from support.faults import run_with_faults
from support.platform import SPIKE_AT, Platform, Sender, metric_payloads, sign
from support.private_kafka import PrivateKafka

from platform_common.settings import CommonSettings
from platform_common.testing import consumer_lag, count_event_ids

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
    answers_while_down: list[tuple[int | None, str | None]] = []
    flow = sender.flow(payloads, rate=60)
    time.sleep(5)
    broker.stop()
    down_since = time.monotonic()
    with httpx.Client(timeout=10) as client:  # probes during the outage: 503 kafka_unavailable within 3 s, never 202
        while time.monotonic() - down_since < 10:
            probe = {**payloads[0], "id": f"probe-{time.time_ns()}"}
            body = json.dumps(probe)
            try:
                answer = client.post(f"http://127.0.0.1:{platform.ports['ingest-webhook']}/webhooks/demo",
                                     content=body, headers=sign(probe["id"], body), timeout=3)
                answers_while_down.append((answer.status_code, answer.json().get("error")))
            except httpx.HTTPError as e:
                answers_while_down.append((None, type(e).__name__))
    broker.start()
    recovery = wait_ready(platform, "ingest-webhook")
    flow.join()

    # enrich catches up on its own; then the whole enriched topic is read (it may hold repeats of re-processed
    # records, and probes answered 503 that the producer still wrote later: neither was acknowledged as stored)
    settings = CommonSettings(kafka_bootstrap_servers=broker.bootstrap_servers)
    group, topic = platform.groups["enrich"]
    deadline = time.monotonic() + 90
    while consumer_lag(settings, group, topic) and time.monotonic() < deadline:
        time.sleep(1)
    enriched = count_event_ids(settings, platform.topics["events.enriched.v1"], sender.accepted, 60)
    lost = sender.accepted - set(enriched)
    record(fault="Kafka killed for 10 s (duplicated: repeats in the topic, which sinks de-duplicate)",
           sent=sender.sent, accepted=len(sender.accepted), output="events.enriched.v1",
           found=len(sender.accepted & set(enriched)), lost=len(lost),
           duplicated=sum(enriched[e] - 1 for e in sender.accepted if enriched[e] > 1), recovery_s=recovery)
    assert answers_while_down and set(answers_while_down) == {(503, "kafka_unavailable")}, answers_while_down
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
    raw = count_event_ids(CommonSettings(), platform.topics["events.raw.v1"], sender.accepted, 30)
    record(fault="Redis stopped", sent=sender.sent, accepted=len(sender.accepted), output="events.raw.v1",
           found=len(set(raw) & sender.accepted), lost=len(sender.accepted - set(raw)),
           duplicated=sum(n - 1 for n in raw.values()), recovery_s=recovery)
    assert set(raw) == sender.accepted and set(raw.values()) == {1}, raw


PG_USERS = ("anomaly", "notify", "reports")


def postgres_outage(platform: Platform, seconds: float = 8) -> float:
    """Stops PostgreSQL until every service that needs it says it is not ready (and a while longer), starts it
    again, and returns the seconds until they are all ready again."""
    stack("down", "postgres")
    try:
        deadline = time.monotonic() + 20
        states = {}
        while time.monotonic() < deadline and set(states.values()) != {503}:
            states = {name: ready(platform, name) for name in PG_USERS}
            time.sleep(0.5)
        assert set(states.values()) == {503}, f"not every service said it was not ready: {states}"
        time.sleep(seconds)
    finally:
        stack("up", "postgres")
    started = time.monotonic()
    for name in PG_USERS:
        wait_ready(platform, name)
    return time.monotonic() - started


async def test_postgres_restart_under_traffic_loses_nothing(start_platform, settings, run_id):
    """anomaly (models), notify (deliveries) and reports (projections) wait out PostgreSQL: not ready meanwhile,
    then they catch up on their own; every accepted event is stored once and every alert delivered once."""
    platform = start_platform(("ingest-webhook", "enrich", "anomaly", "notify", "reports"))
    await run_with_faults(platform, settings, run_id, streams=2, points=SPIKE_AT + 60, rate=100,
                          faults=[partial(postgres_outage, platform)], fault="PostgreSQL stopped under traffic")
