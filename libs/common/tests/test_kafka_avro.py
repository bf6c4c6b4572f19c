"""libs/common against the real Kafka and registry: wire format, DLQ routing, trace propagation, and outputs
acknowledged before their inputs commit."""

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry import trace

from platform_common.kafka import RAW, Publisher, dlq, ensure_topics
from platform_common.stream import ReliableConsumer, stream_publisher
from platform_common.testing import consumer_lag, decode_avro, read_messages

NOW_MS = 1_763_800_000_000


def raw_event(n: int, **overrides) -> dict:
    return {
        "event_id": f"evt-{n}", "delivery_id": f"msg-{n}", "source": "demo", "type": "reading",
        "stream_id": f"stream-{n % 3}", "tenant": "acme", "occurred_at": NOW_MS + n, "received_at": NOW_MS + n + 5,
        "text": {"body": f"Acme Corp shipped order {n}"}, "metrics": {"latency_ms": 12.5 + n},
        "attributes": {"region": "eu"}, "raw_payload": f'{{"n": {n:d}}}', **overrides,
    }


async def test_published_record_is_read_by_confluent_avro_deserializer(settings, topic, spans):
    publisher = Publisher(settings)
    await publisher.start()
    try:
        meta = await publisher.publish(topic, "stream-1", raw_event(1), schema_of=RAW)
    finally:
        await publisher.stop()

    [msg] = read_messages(settings, topic, 1)
    value = decode_avro(settings, msg)
    assert (msg.partition(), msg.offset()) == (meta.partition, meta.offset)
    assert msg.value()[0] == 0  # Confluent magic byte
    assert msg.key() == b"stream-1"
    expected = raw_event(1)
    assert {k: value[k] for k in ("event_id", "source", "stream_id", "tenant", "text", "metrics", "attributes")} == {
        k: expected[k] for k in ("event_id", "source", "stream_id", "tenant", "text", "metrics", "attributes")}
    assert int(value["occurred_at"].timestamp() * 1000) == expected["occurred_at"]
    assert dict(msg.headers())["traceparent"].startswith(b"00-")


async def consume_until(consumer: ReliableConsumer, done, timeout: float = 30) -> None:
    await consumer.start()
    task = asyncio.create_task(consumer.run(batch_timeout_ms=100))
    try:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        task.cancel()
    assert done(), "consumer did not finish in time"


async def test_failing_record_goes_to_dlq_with_reason_and_consumer_goes_on(settings, topic, run_id):
    publisher = Publisher(settings)
    await publisher.start()
    for n in (1, 2, 3):
        await publisher.publish(topic, "k", raw_event(n, event_id="poison" if n == 2 else f"evt-{n}"), schema_of=RAW)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await raw.start()
    await raw.send_and_wait(topic, b"not avro at all", key=b"k")
    await raw.stop()
    await publisher.publish(topic, "k", raw_event(4), schema_of=RAW)

    handled, attempts = [], []

    async def handler(value, record):
        attempts.append(value["event_id"])
        if value["event_id"] == "poison":
            raise ValueError("cannot enrich a poison record")
        handled.append(value["event_id"])

    consumer = ReliableConsumer(settings, [topic], f"g-{run_id}", handler, publisher, max_attempts=3, retry_wait=0.01)
    await consume_until(consumer, lambda: "evt-4" in handled)
    await publisher.stop()

    assert handled == ["evt-1", "evt-3", "evt-4"]
    assert attempts.count("poison") == 3
    dead = read_messages(settings, dlq(topic), 2)
    headers = [dict(m.headers()) for m in dead]
    reasons = sorted(h["dlq.reason"].decode() for h in headers)
    assert reasons[0].startswith("SerializerError") or "magic" in reasons[0] or "small" in reasons[0]
    assert reasons[1] == "ValueError: cannot enrich a poison record"
    for h in headers:
        assert h["dlq.source.topic"].decode() == topic
        assert h["dlq.consumer.group"].decode() == f"g-{run_id}"
        assert int(h["dlq.source.offset"]) in (1, 3)
        assert b"Traceback" in h["dlq.stack"]
    assert b"not avro at all" in [m.value() for m in dead]


async def test_consumer_span_continues_the_producer_trace(settings, topic, run_id, spans):
    publisher = Publisher(settings)
    await publisher.start()
    with trace.get_tracer("test").start_as_current_span("webhook request") as root:
        await publisher.publish(topic, "k", raw_event(1), schema_of=RAW)
    seen = []

    async def handler(value, record):
        seen.append(trace.get_current_span().get_span_context())

    consumer = ReliableConsumer(settings, [topic], f"g-{run_id}", handler, publisher)
    await consume_until(consumer, lambda: bool(seen))
    await publisher.stop()

    assert seen[0].trace_id == root.get_span_context().trace_id
    trace.get_tracer_provider().force_flush()
    by_name = {s.name: s for s in spans.get_finished_spans() if s.context.trace_id == seen[0].trace_id}
    send, process = by_name[f"send {topic}"], by_name[f"process {topic}"]
    assert process.parent.span_id == send.context.span_id
    assert send.parent.span_id == root.get_span_context().span_id
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.consumer.group.name"] == f"g-{run_id}"


async def run_refusing(settings, topic, run_id, guarantee, refused) -> tuple[Counter, str, str]:
    """Three raw events through a ReliableConsumer whose handler enqueues each as its output and returns the ack. An
    output `refused(event_id, attempt)` names goes to a topic whose max.message.bytes it exceeds (client-side it is
    small enough), so the broker refuses it. Runs until the group's lag is 0 (or 60 s); returns the attempts per
    event, the output topic and the refusing topic."""
    out, tiny = f"test.common.out.{run_id}", f"test.common.tiny.{run_id}"
    await ensure_topics(settings, [out])
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(tiny, num_partitions=1, replication_factor=1,
                                            topic_configs={"max.message.bytes": "1024"})])
    finally:
        await admin.close()
    source = Publisher(settings)
    await source.start()
    for n in (1, 2, 3):
        await source.publish(topic, "k", raw_event(n), schema_of=RAW)
    await source.stop()

    group = f"g-{run_id}"
    publisher = stream_publisher(settings, guarantee, group, run_id)
    await publisher.start()
    attempts: Counter = Counter()

    async def handler(value, record):
        attempts[value["event_id"]] += 1
        if refused(value["event_id"], attempts[value["event_id"]]):
            return await publisher.enqueue(tiny, "k", {**value, "raw_payload": "x" * 4000}, schema_of=RAW)
        return await publisher.enqueue(out, "k", value, schema_of=RAW)

    consumer = ReliableConsumer(settings, [topic], group, handler, publisher, retry_wait=0.01, guarantee=guarantee)
    await consumer.start()
    task = asyncio.create_task(consumer.run(batch_timeout_ms=100))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (attempts["evt-1"] < 2 or consumer_lag(settings, group, topic)):
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await consumer.stop()
        await publisher.stop()
    assert consumer_lag(settings, group, topic) == 0, "the batch after the failed one did not commit"
    return attempts, out, tiny


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_an_output_the_broker_refuses_fails_its_batch_and_the_input_comes_again(settings, topic, run_id,
                                                                                     guarantee):
    """The stream awaits the batch's acks before it commits. evt-1's first output is refused: the batch must fail,
    nothing of it commit, and evt-1 come again. Not awaiting the acks commits evt-1 without any output."""
    attempts, out, tiny = await run_refusing(settings, topic, run_id, guarantee,
                                             lambda event, attempt: event == "evt-1" and attempt == 1)
    assert attempts["evt-1"] >= 2, "the input whose output was refused did not come again"
    outputs = Counter(decode_avro(settings, m)["event_id"] for m in read_messages(settings, out, 10, timeout=8))
    assert set(outputs) == {"evt-1", "evt-2", "evt-3"}, "an input was committed without its output"
    if guarantee == "exactly_once":  # the failed attempt's outputs were aborted with its transaction
        assert outputs == {"evt-1": 1, "evt-2": 1, "evt-3": 1}
    assert read_messages(settings, tiny, 1, timeout=2) == []
    assert read_messages(settings, dlq(topic), 1, timeout=2) == []


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_an_input_whose_output_is_always_refused_is_dead_lettered_after_its_attempts(settings, topic, run_id,
                                                                                          guarantee):
    """evt-1's output is too large for its topic every time: after `consumer_max_attempts` refused batches evt-1 is
    dead-lettered with the refusal, and the stream goes on (before, its batch came again for ever)."""
    attempts, out, _ = await run_refusing(settings, topic, run_id, guarantee, lambda event, _: event == "evt-1")
    assert attempts["evt-1"] == settings.consumer_max_attempts
    outputs = Counter(decode_avro(settings, m)["event_id"] for m in read_messages(settings, out, 10, timeout=8))
    assert set(outputs) == {"evt-2", "evt-3"}
    if guarantee == "exactly_once":
        assert outputs == {"evt-2": 1, "evt-3": 1}
    [dead] = read_messages(settings, dlq(topic), 2, timeout=8)
    headers = dict(dead.headers())
    assert headers["dlq.exception.type"] == b"aiokafka.errors.MessageSizeTooLargeError"
    assert decode_avro(settings, dead)["event_id"] == "evt-1"
    assert int(headers["dlq.source.offset"]) == 0 and headers["dlq.consumer.group"] == f"g-{run_id}".encode()
