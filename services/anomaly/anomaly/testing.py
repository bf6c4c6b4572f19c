"""Helpers shared by the tests and bench.py: the service as a subprocess, enriched events as enrich publishes
them, and the clean-up of what a run made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from platform_common.testing import wait_http

from .settings import AnomalySettings


class ServiceProcess:
    """`python -m anomaly` on the topics, consumer group, schema and port of `settings`, its data and log under
    `workdir`; `env` adds or overrides variables (e.g. ANOMALY_BATCH_SECONDS)."""

    def __init__(self, settings: AnomalySettings, workdir: Path, **env: str):
        self.settings = settings
        s = settings
        self.env = {**os.environ, "ANOMALY_SOURCE_TOPIC": s.anomaly_source_topic,
                    "ANOMALY_ALERT_TOPIC": s.anomaly_alert_topic, "ANOMALY_APP_ID": s.anomaly_app_id,
                    "ANOMALY_DB_SCHEMA": s.anomaly_db_schema, "ANOMALY_PORT": str(s.anomaly_port),
                    "STACK_DATA_DIR": str(workdir), "LOG_LEVEL": "WARNING", "TEST_LOG": str(workdir / "service.log"),
                    **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.env["TEST_LOG"], "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "anomaly"], env=self.env, stdout=log, stderr=log)
        wait_http(f"http://127.0.0.1:{self.settings.anomaly_port}/readyz", 60, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def enriched_event(stream_id: str, i: int, value: float) -> dict:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=5 * i)
    return {"event_id": f"{stream_id}-{i}", "delivery_id": f"{stream_id}-{i}", "source": "tests", "type": "metric",
            "stream_id": stream_id, "tenant": "default", "occurred_at": at, "received_at": at, "text": {},
            "metrics": {"latency_ms": value}, "attributes": {}, "raw_payload": "{}", "entities": [],
            "sentiment": [], "models": [], "enriched_at": at}


async def cleanup(s: AnomalySettings) -> None:
    """Drops what a run of the service made: its PostgreSQL schema, its topics and Faust's topics of its app id."""
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute(f"drop schema if exists {s.anomaly_db_schema} cascade")
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.delete_topics([t for t in existing if s.anomaly_app_id in t or t.startswith(
            (s.anomaly_source_topic, s.anomaly_alert_topic))])
    finally:
        await admin.close()
