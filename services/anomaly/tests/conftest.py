"""Fixtures of the anomaly tests: the service run as a real process against the local stack, on topics, a
consumer group and a PostgreSQL schema of its own."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import asyncpg
import numpy as np
import pytest

from anomaly.settings import AnomalySettings
from anomaly.testing import AnomalyProcess, cleanup, enriched_event
from platform_common.kafka import Publisher, dlq, ensure_topics
from platform_common.testing import decode_avro, free_port, read_messages


@pytest.fixture(scope="module")
def anomaly_settings() -> AnomalySettings:
    """One service per test module (it starts in seconds, not milliseconds); streams are per test."""
    run_id = uuid.uuid4().hex[:10]
    return AnomalySettings(anomaly_source_topic=f"test.anomaly.in.{run_id}",
                           anomaly_alert_topic=f"test.anomaly.out.{run_id}",
                           anomaly_app_id=f"anomaly-test-{run_id}", anomaly_db_schema=f"anomaly_test_{run_id}",
                           anomaly_port=free_port(), anomaly_batch_seconds=0.2, service_name="anomaly-test")


@pytest.fixture(scope="module")
def service(anomaly_settings, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("anomaly")
    s = anomaly_settings
    asyncio.run(ensure_topics(s, [s.anomaly_source_topic, s.anomaly_alert_topic]))
    proc = AnomalyProcess(s, tmp_path, ANOMALY_BATCH_SECONDS="0.2")
    proc.start()
    yield proc
    proc.stop()
    asyncio.run(cleanup(s))


def series(n: int, seed: int, spike_at: int | None = None) -> list[float]:
    """A noisy daily-ish wave around 50; an optional 4-point spike of +40."""
    rng = np.random.default_rng(seed)
    values = 50 + 5 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.5, n)
    if spike_at is not None:
        values[spike_at:spike_at + 4] += 40
    return [float(v) for v in values]


def burst(n: int, seed: int, at: int, length: int = 40) -> list[float]:
    """The wave of `series` with a burst of fast oscillation inside its usual range: every value and every short
    mean stays within what the last hours held, only the shape is wrong."""
    values = np.asarray(series(n, seed))
    k = np.arange(length)
    values[at:at + length] = 50 + 5 * np.sin(k * 2 * np.pi / 8) + np.random.default_rng(seed).normal(0, 0.5, length)
    return [float(v) for v in values]


def traceparent(stream_id: str, i: int) -> str:
    """The W3C trace context the event of index `i` travels with (as ingest-webhook would start it)."""
    trace_id = hashlib.sha256(f"{stream_id}-{i}".encode()).hexdigest()[:32]
    return f"00-{trace_id}-{trace_id[:16]}-01"


class Harness:
    """What the tests do with the stack: post events, wait for the service, read the alerts."""

    def __init__(self, settings: AnomalySettings):
        self.settings = settings

    traceparent = staticmethod(traceparent)

    def series(self, n: int, seed: int, spike_at: int | None = None) -> list[float]:
        return series(n, seed, spike_at)

    burst = staticmethod(burst)

    def post(self, stream_id: str, values: list[float], start: int = 0, tenant: str = "default") -> int:
        return asyncio.run(post(self.settings, stream_id, values, start, tenant))

    def wait_processed(self, stream_id: str, offset: int, tenant: str = "default") -> None:
        asyncio.run(wait_processed(self.settings, stream_id, offset, tenant))

    def wait_held(self, stream_id: str, offset: int) -> None:
        """Until the stream's saved state reaches `offset` with points held for a model still training."""
        asyncio.run(wait_processed(self.settings, stream_id, offset, held=True))

    def alerts(self, stream_id: str, tenant: str = "default") -> list[dict]:
        return [a for a in alerts(self.settings, stream_id) if a["tenant"] == tenant]

    def models(self, stream_id: str, timeout: float = 60, tenant: str = "default") -> list[dict]:
        """The stream's stored model versions, once there is at least one (training runs in the background)."""
        async def fetch() -> list[dict]:
            conn = await asyncpg.connect(self.settings.database_url)
            try:
                deadline = time.monotonic() + timeout
                while True:
                    rows = await conn.fetch(f"select version, tenant, reason, hyperparameters, validation_error, "
                                            f"train_start, train_end from {self.settings.anomaly_db_schema}.models "
                                            f"where stream_id=$1 and tenant=$2 order by train_end", stream_id, tenant)
                    if rows or time.monotonic() > deadline:
                        return [dict(r) for r in rows]
                    await asyncio.sleep(1)
            finally:
                await conn.close()
        return asyncio.run(fetch())

    def post_raw(self, stream_id: str, payload: bytes) -> None:
        async def send() -> None:
            publisher = Publisher(self.settings)
            await publisher.start()
            try:
                await publisher.send(self.settings.anomaly_source_topic, stream_id, payload)
            finally:
                await publisher.stop()
        asyncio.run(send())

    def post_event(self, event: dict) -> int:
        """Publishes one enriched event as enrich would; returns its offset."""
        async def send() -> int:
            publisher = Publisher(self.settings)
            await publisher.start()
            try:
                payload = await publisher.serde.encode(self.settings.anomaly_source_topic, event, "events.enriched.v1")
                meta = await publisher.send(self.settings.anomaly_source_topic, event["stream_id"], payload)
                return meta.offset
            finally:
                await publisher.stop()
        return asyncio.run(send())

    def dead_letters(self, count: int) -> list:
        return read_messages(self.settings, dlq(self.settings.anomaly_source_topic), count, timeout=30)


@pytest.fixture(scope="module")
def harness(anomaly_settings) -> Harness:
    return Harness(anomaly_settings)


async def post(settings: AnomalySettings, stream_id: str, values: list[float], start: int = 0,
               tenant: str = "default") -> int:
    """Publishes events as enrich does; returns the offset of the last one."""
    publisher = Publisher(settings)
    await publisher.start()
    try:
        sent = []
        for i, v in enumerate(values):
            payload = await publisher.serde.encode(settings.anomaly_source_topic,
                                                   enriched_event(stream_id, start + i, v, tenant),
                                                   "events.enriched.v1")
            # straight to the producer: Publisher would replace the context with this process's (none here);
            # one idempotent producer keeps the stream's order without waiting for each ack
            sent.append(await publisher.producer.send(
                settings.anomaly_source_topic, payload, key=stream_id.encode(),
                headers=[("traceparent", traceparent(stream_id, start + i).encode())]))
        return (await asyncio.gather(*sent))[-1].offset
    finally:
        await publisher.stop()


async def wait_processed(settings: AnomalySettings, stream_id: str, offset: int, tenant: str = "default",
                         timeout: float = 90, held: bool = False) -> None:
    """Waits until the service has saved the stream's state up to `offset`, no point held for a model (`held`:
    some)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                row = await conn.fetchrow(
                    f"select last_offset, (select coalesce(sum(jsonb_array_length(d.value->'pending')), 0) "
                    f"from jsonb_each(detectors) d) as held from {settings.anomaly_db_schema}.streams "
                    f"where tenant=$1 and stream_id=$2", tenant, stream_id)
            except asyncpg.UndefinedTableError:
                row = None
            if row is not None and row["last_offset"] >= offset and (row["held"] > 0) == held:
                return
            await asyncio.sleep(0.1 if held else 0.5)
    finally:
        await conn.close()
    raise TimeoutError(f"{stream_id} not processed up to {offset}")


def alerts(settings: AnomalySettings, stream_id: str, expected: int = 100, timeout: float = 5) -> list[dict]:
    """The stream's alerts read back with confluent-kafka's AvroDeserializer."""
    msgs = read_messages(settings, settings.anomaly_alert_topic, expected, timeout=timeout)
    values = [decode_avro(settings, m) for m in msgs]
    return [v for v in values if v["stream_id"] == stream_id]
