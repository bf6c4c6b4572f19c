"""The projections, fed from real topics by the service's consumer: idempotent on event id, rebuilt by a replay."""

import asyncio
import time

from prometheus_client import REGISTRY

from platform_common.kafka import ANOMALIES, ENRICHED, RAW, Publisher, ensure_topics
from reports.projector import projector
from reports.store import Store


async def consume_until(settings, store: Store, group: str, expected_events: int, expected_alerts: int) -> None:
    consumer = projector(settings.model_copy(update={"reports_group": group}), store, Publisher(settings))
    await consumer.publisher.start()
    await consumer.start()
    task = asyncio.create_task(consumer.run(batch_timeout_ms=200))
    deadline = time.monotonic() + 45
    try:
        while time.monotonic() < deadline:
            events = await store.pool.fetchval(f"select count(*) from {store.s}.events")
            alerts = await store.pool.fetchval(f"select count(*) from {store.s}.anomalies")
            enriched = await store.pool.fetchval(f"select count(*) from {store.s}.events where enriched")
            if (events, alerts, enriched) == (expected_events, expected_alerts, 2):
                await asyncio.sleep(1)  # let redeliveries, if any, land too
                # every record was applied: none failed (a duplicate id would, if the sinks were not upserts)
                failed = [REGISTRY.get_sample_value("kafka_dead_lettered_total", {"topic": t, "group": group})
                          for t in consumer.topics]
                assert not any(failed), f"dead-lettered: {failed}"
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"projection incomplete: {events} events, {alerts} alerts, {enriched} enriched")
    finally:
        await consumer.stop()
        task.cancel()
        await consumer.publisher.stop()


async def snapshot(store: Store) -> tuple:
    """The rows' content: when a row was projected is not part of it (a rebuild stamps every row anew)."""
    stamps = ("projected_at", "enriched_at")
    events = await store.pool.fetch(f"select * from {store.s}.events order by event_id")
    alerts = await store.pool.fetch(f"select * from {store.s}.anomalies order by alert_id")
    return ([{k: v for k, v in r.items() if k not in stamps} for r in events],
            [{k: v for k, v in r.items() if k not in stamps} for r in alerts])


async def test_replaying_the_topics_rebuilds_the_same_tables(rsettings, store, run_id, h):
    events, alert = h.period_events()
    await ensure_topics(rsettings, [rsettings.reports_raw_topic, rsettings.reports_enriched_topic,
                                    rsettings.reports_anomalies_topic])
    publisher = Publisher(rsettings)
    await publisher.start()
    try:
        # two of the events enriched, one of them published (and redelivered) before its raw copy
        negative = {**events[0], "entities": [], "models": [], "enriched_at": events[0]["received_at"],
                    "sentiment": [{"field": "body", "label": "negative", "intensity": "high", "score": -0.8}]}
        neutral = {**events[1], "entities": [], "models": [], "enriched_at": events[1]["received_at"],
                   "sentiment": [{"field": "body", "label": "neutral", "intensity": "low", "score": 0.0}]}
        for e in (negative, negative, neutral):
            await publisher.publish(rsettings.reports_enriched_topic, e["stream_id"], e, schema_of=ENRICHED)
        for e in events + events[:5]:  # the first five are delivered twice
            await publisher.publish(rsettings.reports_raw_topic, e["stream_id"], e, schema_of=RAW)
        await publisher.publish(rsettings.reports_anomalies_topic, alert["stream_id"], alert, schema_of=ANOMALIES)
    finally:
        await publisher.stop()

    await consume_until(rsettings, store, f"{rsettings.reports_group}-a", len(events), 1)
    first = await snapshot(store)
    row = next(r for r in first[0] if r["event_id"] == negative["event_id"])
    # the raw copy arriving after the enriched one did not erase the enrichment
    assert (row["enriched"], row["negative"], row["sentiment"]) == (True, True, -0.8)
    assert row["metrics"] == events[0]["metrics"] and row["occurred_at"] == events[0]["occurred_at"]
    assert first[1][0]["alert_id"] == alert["alert_id"] and first[1][0]["value"] == h.SPIKE

    # a replay over the existing tables changes nothing
    await consume_until(rsettings, store, f"{rsettings.reports_group}-b", len(events), 1)
    assert await snapshot(store) == first
    # and a replay into empty tables rebuilds them identically
    await store.drop()
    await store.create()
    await consume_until(rsettings, store, f"{rsettings.reports_group}-c", len(events), 1)
    assert await snapshot(store) == first
