"""A flow of signed webhooks through the platform while faults are injected, and what must hold after it:
nothing answered 202 is lost, every accepted event is on events.enriched.v1 exactly once (read_committed, counted
per event id), every alert is on anomalies.v1 once (counted per alert id) and delivered once, and the DLQs hold
only what was meant to fail."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaProducer

from anomaly.service import alert_id
from platform_common.kafka import dlq
from platform_common.testing import consumer_lag, count_event_ids, read_messages

from .chaos import record
from .platform import SPIKE_AT, Platform, Sender, metric_payloads

POISON = 3


async def stored_events(settings, schema: str) -> set[str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(f"select event_id from {schema}.events where enriched")
    finally:
        await conn.close()
    return {r["event_id"] for r in rows}


async def inject_poison(settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i in range(POISON):
            await producer.send_and_wait(topic, b"\x00\x00\x00\x00\x63not avro", key=f"poison-{i}".encode())
    finally:
        await producer.stop()


async def run_with_faults(platform: Platform, settings, run_id: str, streams: int, points: int, rate: float,
                          faults: list[Callable[[], float]], fault: str) -> None:
    """Signed webhooks flow at `rate` while each fault is injected in turn (a fault returns the seconds until the
    platform was ready again); then every accepted event must be stored once, every alert delivered once, and the
    raw topic's DLQ hold only the poison records."""
    sender = Sender(platform.ports["ingest-webhook"])
    # the spike comes once the anomaly detector may alert, with room for its resolve
    assert points >= SPIKE_AT + 60, f"{points} points end before the detector may alert and resolve"
    payloads = metric_payloads(run_id, streams=streams, points=points, spike_at=points - 60)
    flow = sender.flow(payloads, rate)
    await inject_poison(settings, platform.topics["events.raw.v1"])
    recoveries = []
    for inject in faults:
        await asyncio.sleep(len(payloads) / rate / (len(faults) + 1))
        recoveries.append(await asyncio.to_thread(inject))
    await asyncio.to_thread(flow.join)

    # everything accepted is on the enriched topic exactly once, and in the reports projection (the sink)
    enriched = await asyncio.to_thread(count_event_ids, settings, platform.topics["events.enriched.v1"],
                                       sender.accepted, 180)
    deadline = time.monotonic() + 60
    stored: set[str] = set()
    while time.monotonic() < deadline:
        stored = await stored_events(settings, platform.schemas["reports"])
        if sender.accepted <= stored:
            break
        await asyncio.sleep(2)
    lost = sender.accepted - (set(enriched) & stored)
    duplicated = sum(n - 1 for n in enriched.values())

    # each stream spiked once: one trigger per stream, delivered once to PagerDuty
    deadline = time.monotonic() + 90
    triggers = []
    while time.monotonic() < deadline:
        triggers = [e for e in platform.received() if e["event_action"] == "trigger"]
        if len(triggers) >= streams:
            break
        await asyncio.sleep(2)
    await asyncio.sleep(5)  # a late duplicate would show up here
    triggers = [e for e in platform.received() if e["event_action"] == "trigger"]
    per_key = Counter(e["dedup_key"] for e in triggers)
    # anomaly's output read committed, per alert id: each delivered trigger (its resolve may still be on the way)
    alerts = await asyncio.to_thread(count_event_ids, settings, platform.topics["anomalies.v1"],
                                     {alert_id(key, "trigger") for key in per_key}, 60, field="alert_id")
    alerts_repeated = sum(n - 1 for n in alerts.values())

    uncontextualized, rag_repeated, rag_dead = set(), 0, []
    if "rag" in platform.services:
        # rag embeds and searches per event, so it is the slowest consumer: wait until it has caught up
        group, topic = platform.groups["rag"]
        deadline = time.monotonic() + 300
        while await asyncio.to_thread(consumer_lag, settings, group, topic) and time.monotonic() < deadline:
            await asyncio.sleep(5)
        seen = await asyncio.to_thread(count_event_ids, settings, platform.topics["events.contextualized.v1"],
                                       sender.accepted, 60)
        uncontextualized = sender.accepted - set(seen)
        rag_repeated = sum(n - 1 for n in seen.values())  # rag commits its outputs transactionally
        rag_dead = read_messages(settings, dlq(topic), 1, timeout=5)

    dead = read_messages(settings, dlq(platform.topics["events.raw.v1"]), POISON + 5, timeout=10)
    record(fault=fault + f" (alerts repeated {alerts_repeated}" +
           (f", rag repeated {rag_repeated})" if "rag" in platform.services else ")"),
           sent=sender.sent, accepted=len(sender.accepted), output="events.enriched.v1",
           found=len(set(enriched) & sender.accepted), lost=len(lost), duplicated=duplicated,
           recovery_s=max(recoveries))

    assert not lost, f"{len(lost)} accepted events never stored, e.g. {sorted(lost)[:3]}\n{platform.logs()}"
    assert duplicated == 0, f"{duplicated} repeated records on events.enriched.v1: " + \
        str(sorted((i, n) for i, n in enriched.items() if n > 1)[:5])
    assert alerts_repeated == 0, f"{alerts_repeated} repeated alerts on anomalies.v1: " + \
        str(sorted((i, n) for i, n in alerts.items() if n > 1)[:5])
    assert not uncontextualized, f"{len(uncontextualized)} accepted events have no contextualized counterpart"
    assert rag_repeated == 0, f"{rag_repeated} repeated records on events.contextualized.v1"
    assert not rag_dead, [m.headers() for m in rag_dead]
    assert len(per_key) == streams and set(per_key.values()) == {1}, per_key
    # only the poison records, each at least once (a consumer killed before its commit dead-letters it again)
    assert {m.key() for m in dead} == {f"poison-{i}".encode() for i in range(POISON)}, [m.headers() for m in dead]
