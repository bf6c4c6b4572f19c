"""Publishes canonical events: Avro (Confluent wire format), key = stream id, idempotent producer, acks=all,
answering only once Kafka acknowledged, or failing within a bounded time."""

from __future__ import annotations

import asyncio
import logging
import time

from platform_common.avro import AvroSerde
from platform_common.kafka import RAW, Publisher, ensure_topics

from .metrics import KAFKA_ERRORS, PUBLISH_SECONDS
from .settings import IngestSettings

log = logging.getLogger(__name__)


class PublishUnavailable(Exception):
    """Kafka did not acknowledge the event in time (or refused it): nothing was acknowledged to the client."""


class EventPublisher:
    def __init__(self, settings: IngestSettings):
        self.settings = settings
        self.topic = settings.ingest_topic
        self.timeout = settings.ingest_publish_timeout
        self.serde = AvroSerde(settings.schema_registry_url)
        self.publisher = Publisher(settings, self.serde, linger_ms=settings.ingest_linger_ms)

    async def start(self) -> None:
        await ensure_topics(self.settings, [self.topic])
        await self.serde.register(self.topic, schema_of=RAW)  # fail at start, not on the first webhook
        await self.publisher.start()

    async def stop(self) -> None:
        await self.publisher.stop()

    async def publish(self, event: dict, timeout: float | None = None) -> dict:
        """The event's coordinates once acknowledged; PublishUnavailable otherwise, within `timeout` seconds
        (default: INGEST_PUBLISH_TIMEOUT)."""
        started = time.perf_counter()
        source = event["source"]
        try:
            payload = await self.serde.encode(self.topic, event, schema_of=RAW)
            async with asyncio.timeout(timeout or self.timeout):
                meta = await self.publisher.send(self.topic, event["stream_id"], payload)
        except Exception as e:
            # a timed-out send may still be written later: the client's retry then repeats the same event_id,
            # which the sinks are idempotent on; what matters is that nothing unstored is acknowledged
            error = "timeout" if isinstance(e, asyncio.TimeoutError) else type(e).__name__
            KAFKA_ERRORS.labels(error).inc()
            PUBLISH_SECONDS.labels(source, "failed").observe(time.perf_counter() - started)
            log.warning("publish failed", extra={"source": source, "event_id": event["event_id"], "error": error})
            raise PublishUnavailable(error) from e
        PUBLISH_SECONDS.labels(source, "ok").observe(time.perf_counter() - started)
        return {"event_id": event["event_id"], "topic": meta.topic, "partition": meta.partition,
                "offset": meta.offset}
