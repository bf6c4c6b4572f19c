"""`make replay`: the projections rebuilt from the topics are the same tables (the topics are the source of truth)."""

import asyncpg
from reports.replay import fingerprint, rebuild, replay
from reports.settings import ReportsSettings

from platform_common.kafka import ANOMALIES, ENRICHED, RAW, Publisher, ensure_topics


def event(n: int) -> dict:
    return {"event_id": f"e{n}", "delivery_id": f"d{n}", "source": "demo", "type": "reading", "stream_id": f"s{n % 2}",
            "tenant": "acme", "occurred_at": 1_767_225_600_000 + n * 60_000, "received_at": 1_767_225_600_000,
            "text": {"body": "ok"}, "metrics": {"load": float(n)}, "attributes": {}, "raw_payload": "{}"}


async def test_replay_rebuilds_identical_projections_and_repairs_a_damaged_one(run_id):
    settings = ReportsSettings(reports_db_schema=f"reports_replay_{run_id}", reports_group=f"reports-{run_id}",
                               **{f"reports_{k}_topic": f"{t}.{run_id}" for k, t in
                                  (("raw", RAW), ("enriched", ENRICHED), ("anomalies", ANOMALIES))})
    await ensure_topics(settings, [settings.reports_raw_topic, settings.reports_enriched_topic,
                                   settings.reports_anomalies_topic])
    publisher = Publisher(settings)
    await publisher.start()
    for n in range(30):
        await publisher.publish(settings.reports_raw_topic, f"s{n % 2}", event(n))
        await publisher.publish(settings.reports_raw_topic, f"s{n % 2}", event(n))  # a redelivery: still one row
    for n in range(20):
        await publisher.publish(settings.reports_enriched_topic, f"s{n % 2}", {
            **event(n), "entities": [], "sentiment": [{"field": "body", "label": "negative", "intensity": "high",
                                                         "score": -0.8}],
            "models": [], "enriched_at": 1_767_225_600_000})
    await publisher.stop()

    live = settings.reports_db_schema
    await rebuild(settings, live)  # what the running service's projector does
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert (await fingerprint(conn, live))["events"][0] == 30
        assert await replay(settings, swap=False)

        await conn.execute(f"delete from {live}.events where event_id = 'e3'")
        await conn.execute(f"update {live}.events set enriched = false where event_id = 'e4'")
        assert not await replay(settings, swap=False)
        assert await replay(settings, swap=True)
        assert await replay(settings, swap=False)
        assert await conn.fetchval(f"select enriched from {live}.events where event_id = 'e4'")
    finally:
        await conn.execute(f"drop schema if exists {live} cascade")
        await conn.close()
