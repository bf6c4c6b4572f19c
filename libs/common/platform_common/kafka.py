"""Kafka on aiokafka: an idempotent Avro publisher and a consumer that commits only what it processed.

Failed records are retried a bounded number of times, then sent to `<topic>.dlq` with the reason, the source
coordinates and the stack in headers, and the consumer carries on with the next record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from .avro import AvroSerde
from .retry import until_available
from .settings import CommonSettings
from .tracing import inject_headers, process_span, publish_span

log = logging.getLogger(__name__)

RAW = "events.raw.v1"
ENRICHED = "events.enriched.v1"
ANOMALIES = "anomalies.v1"
CONTEXTUALIZED = "events.contextualized.v1"
DOCUMENTS = "documents.v1"
REPORTS = "reports.v1"
NOTIFICATIONS = "notifications.v1"

PUBLISHED = Counter("kafka_messages_published_total", "Records published", ["topic"])
PUBLISH_ERRORS = Counter("kafka_publish_errors_total", "Records that could not be published", ["topic"])
PUBLISH_SECONDS = Histogram("kafka_publish_duration_seconds", "Time from send to broker acknowledgement", ["topic"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
CONSUMED = Counter("kafka_messages_consumed_total", "Records processed", ["topic", "group", "outcome"])
PROCESS_SECONDS = Histogram("kafka_process_duration_seconds", "Time to process one record", ["topic", "group"])
DEAD_LETTERED = Counter("kafka_dead_lettered_total", "Records sent to the DLQ", ["topic", "group"])


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


async def ensure_topics(settings: CommonSettings, topics: Iterable[str]) -> None:
    """Creates missing topics (and their DLQs) with the configured partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        topics = set(topics)
        wanted = topics | {dlq(t) for t in topics if not t.endswith(".dlq")}
        missing = [NewTopic(t, num_partitions=settings.kafka_partitions, replication_factor=1)
                   for t in sorted(wanted - existing)]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


class Publisher:
    """Avro values, stream-id keys, trace context in headers; acks=all with an idempotent producer."""

    def __init__(self, settings: CommonSettings, serde: AvroSerde | None = None, **producer_options: Any):
        self.serde = serde or AvroSerde(settings.schema_registry_url)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=producer_options.pop("linger_ms", 2),
            client_id=settings.service_name,
            **producer_options,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, topic: str, key: str, value: dict, headers: list[tuple[str, bytes]] | None = None,
                      *, schema_of: str | None = None) -> RecordMetadata:
        """`schema_of` names the contract topic whose schema `topic` carries, when they differ (see AvroSerde)."""
        payload = await self.serde.encode(topic, value, schema_of)
        return await self.send(topic, key, payload, headers)

    async def send(self, topic: str, key: str | None, payload: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> RecordMetadata:
        """Sends already-encoded bytes; returns once the broker acknowledged them."""
        with publish_span(topic, key) as span:
            started = time.perf_counter()
            try:
                meta = await self.producer.send_and_wait(
                    topic, payload, key=key.encode() if key is not None else None, headers=inject_headers(headers))
            except Exception:
                PUBLISH_ERRORS.labels(topic).inc()
                raise
            PUBLISH_SECONDS.labels(topic).observe(time.perf_counter() - started)
            PUBLISHED.labels(topic).inc()
            span.set_attribute("messaging.destination.partition.id", str(meta.partition))
            span.set_attribute("messaging.kafka.offset", meta.offset)
            return meta


Handler = Callable[[dict, ConsumerRecord], Awaitable[None]]


class ReliableConsumer:
    """Consumes `topics` in `group_id`, calling `handler(value, record)` for each record in order.

    Offsets are committed per batch, only up to records that were handled or dead-lettered, so a crash
    re-delivers (at-least-once; sinks are idempotent on event id) and never skips. A handler failing because a
    dependency is down (`retry.UNAVAILABLE`) is retried until it is back, without committing, not dead-lettered.
    """

    def __init__(self, settings: CommonSettings, topics: list[str], group_id: str, handler: Handler,
                 publisher: Publisher, max_attempts: int | None = None, retry_wait: float = 0.2,
                 **consumer_options: Any):
        self.settings = settings
        self.topics = topics
        self.group_id = group_id
        self.handler = handler
        self.publisher = publisher
        self.max_attempts = max_attempts or settings.consumer_max_attempts
        self.retry_wait = retry_wait
        self.consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",  # never the outputs of an aborted upstream transaction
            auto_offset_reset=consumer_options.pop("auto_offset_reset", "earliest"),
            client_id=f"{settings.service_name}-{group_id}",
            **consumer_options,
        )
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self.consumer.stop()

    async def run(self, batch_timeout_ms: int = 500, max_records: int = 500) -> None:
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=batch_timeout_ms, max_records=max_records)
            for tp, records in batches.items():
                for record in records:
                    await self.process(record)
                await self.consumer.commit({tp: records[-1].offset + 1})

    async def process(self, record: ConsumerRecord) -> None:
        labels = (record.topic, self.group_id)
        with process_span(record.topic, self.group_id, record.headers, record.partition, record.offset), \
                PROCESS_SECONDS.labels(*labels).time():
            try:
                value = await self.publisher.serde.decode(record.value)
            except Exception as e:  # undecodable: retrying cannot help
                await self.dead_letter(record, e)
                return
            try:
                await until_available(lambda: self._handle(value, record), f"a dependency of {self.group_id}")
            except Exception as e:
                await self.dead_letter(record, e)
                return
        CONSUMED.labels(*labels, "ok").inc()

    async def _handle(self, value: dict, record: ConsumerRecord) -> None:
        """The handler, retried a bounded number of times for any failure (then the DLQ has the record)."""
        async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_attempts), reraise=True,
                                           wait=wait_exponential(multiplier=self.retry_wait, max=5)):
            with attempt:
                await self.handler(value, record)

    async def dead_letter(self, record: ConsumerRecord, error: Exception) -> None:
        await dead_letter(self.publisher, record, error, self.group_id)
        CONSUMED.labels(record.topic, self.group_id, "dead_lettered").inc()


Redact = Callable[[bytes | None], bytes | None]


async def dead_letter(publisher: Publisher, record: Any, error: BaseException, group_id: str,
                      redact: Redact | None = None) -> None:
    """The one dead-letter writer: `record` (anything with topic, partition, offset, key, value and headers) goes to
    `<topic>.dlq` with the same headers from every service. The value is kept byte for byte, so a fixed consumer can
    replay it, unless `redact` masks it (enrich masks PII that must not sit in a DLQ)."""
    reason = f"{type(error).__name__}: {error}"[:1000]
    log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
    headers = [*(record.headers or ()),
               ("dlq.reason", reason.encode()),
               ("dlq.exception.type", f"{type(error).__module__}.{type(error).__qualname__}".encode()),
               ("dlq.stack", "".join(traceback.format_exception(error))[-4000:].encode()),
               ("dlq.source.topic", record.topic.encode()),
               ("dlq.source.partition", str(record.partition).encode()),
               ("dlq.source.offset", str(record.offset).encode()),
               ("dlq.consumer.group", group_id.encode())]
    key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
    value = redact(record.value) if redact else record.value
    await publisher.send(dlq(record.topic), key, value, headers)
    DEAD_LETTERED.labels(record.topic, group_id).inc()
