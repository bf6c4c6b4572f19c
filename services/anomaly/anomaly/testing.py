"""Helpers shared by the tests and bench.py: the service as a subprocess, enriched events as enrich publishes
them, and the clean-up of what a run made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from platform_common.testing import ServiceProcess

from .settings import AnomalySettings


class AnomalyProcess(ServiceProcess):
    """`python -m anomaly` on the topics, consumer group, schema and port of `settings`, its data and log under
    `workdir`; `env` adds or overrides variables (e.g. ANOMALY_BATCH_SECONDS)."""

    def __init__(self, settings: AnomalySettings, workdir: Path, **env: str):
        s = settings
        super().__init__("anomaly", "anomaly", s.anomaly_port, {
            "ANOMALY_SOURCE_TOPIC": s.anomaly_source_topic, "ANOMALY_ALERT_TOPIC": s.anomaly_alert_topic,
            "ANOMALY_APP_ID": s.anomaly_app_id, "ANOMALY_DB_SCHEMA": s.anomaly_db_schema,
            "ANOMALY_PORT": str(s.anomaly_port), "STACK_DATA_DIR": str(workdir), "LOG_LEVEL": "WARNING", **env},
            workdir)

    def start(self) -> AnomalyProcess:
        super().start()
        self.wait_ready(60)
        return self


START = datetime(2026, 1, 1, tzinfo=UTC)


def event_time(i: int) -> datetime:
    """When the event of index `i` of a test stream occurred (one point every 5 minutes)."""
    return START + timedelta(minutes=5 * i)


def enriched_event(stream_id: str, i: int, value: float, tenant: str = "default") -> dict:
    at = event_time(i)
    return {"event_id": f"{tenant}-{stream_id}-{i}", "delivery_id": f"{tenant}-{stream_id}-{i}", "source": "tests",
            "type": "metric", "stream_id": stream_id, "tenant": tenant, "occurred_at": at, "received_at": at,
            "text": {}, "metrics": {"latency_ms": value}, "attributes": {}, "raw_payload": "{}", "entities": [],
            "sentiment": [], "models": [], "enriched_at": at}


async def cleanup(s: AnomalySettings) -> None:
    """Drops what a run of the service made: its PostgreSQL schema and its topics (with their DLQs)."""
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute(f"drop schema if exists {s.anomaly_db_schema} cascade")
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        ours = (s.anomaly_source_topic, s.anomaly_alert_topic)
        await admin.delete_topics([t for t in existing if t.startswith(ours)])
    finally:
        await admin.close()
