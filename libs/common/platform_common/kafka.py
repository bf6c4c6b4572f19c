"""Kafka on aiokafka: topics, an idempotent Avro publisher, and the one dead-letter writer. The consumer loop is in
`platform_common.stream`."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter, Histogram

from .avro import AvroSerde
from .settings import CommonSettings
from .tracing import inject_headers, publish_span

log = logging.getLogger(__name__)

# a record handed to the producer: resolves on the broker's acknowledgement (see `Publisher.enqueue`)
Ack = asyncio.Future[RecordMetadata]

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
RECORD_AGE = Histogram("kafka_record_age_seconds",
                       "Time from a record's Kafka timestamp (its publishing by the stage before) to the commit of "
                       "the batch that processed it", ["topic", "group"],
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900))


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

    async def enqueue(self, topic: str, key: str, value: dict, headers: list[tuple[str, bytes]] | None = None,
                      *, schema_of: str | None = None) -> Ack:
        """Encodes `value` as `publish` does and hands it to the producer without waiting for the broker: the
        returned future resolves on the broker's acknowledgement, or fails if the broker refuses the record. A stage
        publishing many records enqueues them all and awaits the acks together (`Refusals.acknowledged`; a
        `ReliableConsumer` handler returns its ack and the stream does it before the batch commits) instead of a round
        trip each."""
        payload = await self.serde.encode(topic, value, schema_of)
        with publish_span(topic, key):  # the hand-over to the producer; the ack is awaited by whoever owns the batch
            return await self._hand_over(topic, key, payload, headers)

    async def send(self, topic: str, key: str | None, payload: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> RecordMetadata:
        """Sends already-encoded bytes; returns once the broker acknowledged them."""
        with publish_span(topic, key) as span:
            meta = await (await self._hand_over(topic, key, payload, headers))
            span.set_attribute("messaging.destination.partition.id", str(meta.partition))
            span.set_attribute("messaging.kafka.offset", meta.offset)
            return meta

    async def _hand_over(self, topic: str, key: str | None, payload: bytes | None,
                         headers: list[tuple[str, bytes]] | None) -> Ack:
        """Queues the record in the producer (waiting only while its buffer is full); inside the caller's publish
        span, so the trace context in the headers is that span's."""
        started = time.perf_counter()
        try:
            ack = await self.producer.send(topic, payload, key=key.encode() if key is not None else None,
                                           headers=inject_headers(headers))
        except Exception:
            PUBLISH_ERRORS.labels(topic).inc()
            raise

        def count(done: Ack) -> None:
            if done.cancelled() or done.exception() is not None:  # retrieving it: whoever awaits the ack raises it
                PUBLISH_ERRORS.labels(topic).inc()
            else:
                PUBLISH_SECONDS.labels(topic).observe(time.perf_counter() - started)
                PUBLISHED.labels(topic).inc()
        ack.add_done_callback(count)
        return ack


# the broker's answers that a record itself cannot be stored (too large for its topic, corrupt): retrying the batch
# that sent it cannot help
REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException)


class Refusals:
    """The acks of a batch's outputs, by the input each came from. Any failed ack fails the batch (it is retried, so
    an input is never committed without its output), but an input whose output the broker refused `attempts` times
    (`REFUSED`) is then given up: the stage dead-letters it with the refusal instead of handling it again, so one
    record too large for its topic does not hold its partition for ever."""

    def __init__(self, attempts: int):
        self.attempts = attempts
        self._refused: dict[tuple[str, int, int], tuple[int, BaseException]] = {}

    def given_up(self, record: Any) -> BaseException | None:
        """The refusal to dead-letter `record` with, once its outputs were refused `attempts` times; else None."""
        key = (record.topic, record.partition, record.offset)
        count, error = self._refused.get(key, (0, None))
        if error is None or count < self.attempts:
            return None
        del self._refused[key]
        return error

    async def acknowledged(self, sent: list[tuple[Any, Ack]]) -> None:
        """Waits for every ack of `sent` ((input record, ack) pairs), also after one failed (so nothing is still in
        flight when the caller aborts or retries), then raises the first failure."""
        results = await asyncio.gather(*(ack for _, ack in sent), return_exceptions=True)
        failure = None
        for (record, _), result in zip(sent, results, strict=True):
            key = (record.topic, record.partition, record.offset)
            if isinstance(result, REFUSED):
                self._refused[key] = (self._refused.get(key, (0, result))[0] + 1, result)
            elif not isinstance(result, BaseException):
                self._refused.pop(key, None)
            if isinstance(result, BaseException) and failure is None:
                failure = result
        if failure is not None:
            raise failure


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
