"""Helpers for tests of any service: read a topic back with confluent-kafka, an independent client."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from .settings import CommonSettings


def read_messages(settings: CommonSettings, topic: str, count: int, timeout: float = 20.0,
                  group: str | None = None) -> list[Message]:
    """Reads up to `count` records of `topic` from its beginning (fewer if `timeout` runs out)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": group or f"reader-{topic}-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                found.append(msg)
    finally:
        consumer.close()
    return found


def consumer_lag(settings: CommonSettings, group: str, topic: str) -> int:
    """Records of `topic` not yet committed by `group`: the sum over partitions of end offset minus committed
    offset (a partition the group never committed counts from its start)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        lag = 0
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        consumer.close()


def decode_avro(settings: CommonSettings, msg: Message) -> dict:
    """Decodes a value with confluent-kafka's AvroDeserializer against the registry."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    return deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))


def drop_topics(settings: CommonSettings, topics: list[str], with_dlqs: bool = True) -> None:
    """Deletes a test's topics (and their DLQs) and their registry subjects: the stack is shared."""
    from confluent_kafka.admin import AdminClient
    import httpx

    names = [*topics, *(f"{t}.dlq" for t in topics if with_dlqs and not t.endswith(".dlq"))]
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})  # alive until the futures end
    for future in admin.delete_topics(names, operation_timeout=10).values():
        try:
            future.result(timeout=20)
        except Exception:  # a topic the test never created
            pass
    for name in names:
        for permanent in ("false", "true"):  # a soft delete first, as the registry requires
            httpx.delete(f"{settings.schema_registry_url}/subjects/{name}-value", params={"permanent": permanent},
                         timeout=5)
