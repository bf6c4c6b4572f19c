"""End to end through the real Kafka and registry: `python -m enrich` (local models) as a subprocess."""

import time
import uuid

import httpx
import pytest
from enrich.testing import EnrichProcess, TopicReader, publish_raw, raw_event
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from platform_common.kafka import dlq

TEXT = "Tim Cook said Apple will ship the iPhone 15 Pro in Paris on March 3, 2025 for $999. Great news, up 12%!"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    proc = EnrichProcess(uuid.uuid4().hex[:10], tmp_path_factory.mktemp("enrich"))
    proc.start()
    yield proc
    proc.stop()
    proc.cleanup()


@pytest.fixture(scope="module")
def tracer():
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    return trace.get_tracer("enrich-tests")


@pytest.fixture
def reader(service, common_settings):
    r = TopicReader(common_settings, service.output)
    yield r
    r.close()


async def test_event_is_enriched_within_two_seconds(service, reader, publisher, common_settings, tracer):
    warm = raw_event({"body": "warm-up"})  # the first event also waits for the group to be assigned
    await publish_raw(publisher, common_settings, service.input, [warm])
    assert reader.poll_until({warm["event_id"]}, 60), "enrich never produced the warm-up event"

    event = raw_event({"body": TEXT, "title": "Awful delay"}, stream_id="stream-e2e")
    with tracer.start_as_current_span("webhook") as span:
        started = time.monotonic()
        await publish_raw(publisher, common_settings, service.input, [event])
        trace_id = format(span.get_span_context().trace_id, "032x")
    found = reader.poll_until({event["event_id"]}, 2.0)
    elapsed = time.monotonic() - started
    assert found, "no enriched event within 2 s"
    value, headers = found[event["event_id"]]
    print(f"\nraw -> enriched in {elapsed * 1000:.0f} ms")

    assert value["stream_id"] == "stream-e2e" and value["text"] == event["text"]
    assert value["enrichment_status"] == "ok"
    labels = {(e["field"], e["text"], e["label"]) for e in value["entities"]}
    assert {("body", "Tim Cook", "PERSON"), ("body", "Apple", "ORG"), ("body", "iPhone 15 Pro", "PRODUCT"),
            ("body", "Paris", "LOCATION"), ("body", "March 3, 2025", "DATE"), ("body", "$999", "MONEY"),
            ("body", "12%", "PERCENT")} <= labels
    for e in value["entities"]:
        assert event["text"][e["field"]][e["start"]:e["end"]] == e["text"]
    sentiment = {s["field"]: s for s in value["sentiment"]}
    assert sentiment["body"]["label"] == "positive" and sentiment["title"]["label"] == "negative"
    assert {(m["task"], m["name"]) for m in value["models"]} == {("sentiment", "vader"), ("ner", "pattern-gazetteer-ner")}
    assert all(m["version"] for m in value["models"])
    traceparent = dict(headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == trace_id, "the enriched record does not continue the raw record's trace"


async def test_records_that_cannot_be_enriched_pass_through_with_a_status(service, reader, publisher, common_settings):
    events = {"empty": raw_event({}), "too_large": raw_event({"body": "word " * 5000}),
              "not_text": raw_event({"body": "\x00\x01\x02\x03 binary \x04\x05"}),
              "partial": raw_event({"ok": "Fine service in London.", "huge": "x" * 30000})}
    await publish_raw(publisher, common_settings, service.input, list(events.values()))
    found = reader.poll_until({e["event_id"] for e in events.values()}, 60)
    statuses = {status: found[e["event_id"]][0]["enrichment_status"] for status, e in events.items()}
    assert statuses == {s: s for s in events}
    partial = found[events["partial"]["event_id"]][0]
    assert [e["text"] for e in partial["entities"]] == ["London"] and partial["text"] == events["partial"]["text"]
    assert not found[events["empty"]["event_id"]][0]["models"]


async def test_undecodable_record_goes_to_the_dlq_with_reason_and_masked(service, reader, publisher, common_settings):
    await publisher.send(service.input, "stream-bad", b"not avro, mail jane.doe@example.com, card 4111 1111 1111 1111")
    good = raw_event({"body": "after the bad one"}, stream_id="stream-bad")
    await publish_raw(publisher, common_settings, service.input, [good])
    assert reader.poll_until({good["event_id"]}, 60), "the stream stopped at the bad record"

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": common_settings.kafka_bootstrap_servers, "group.id": "dlq-reader"})
    consumer.assign([TopicPartition(dlq(service.input), p, OFFSET_BEGINNING) for p in range(3)])
    try:
        deadline, msg = time.monotonic() + 20, None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
    finally:
        consumer.close()
    assert msg is not None and not msg.error(), "nothing in the DLQ"
    headers = dict(msg.headers())
    assert headers["dlq.reason"].startswith(b"undecodable record")
    assert headers["dlq.source.topic"] == service.input.encode()
    assert b"jane.doe" not in msg.value() and b"4111" not in msg.value() and b"[EMAIL]" in msg.value()
    assert "dead-lettering" in service.log_path.read_text() and "jane.doe" not in service.log_path.read_text()


async def test_ops_endpoints(service):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = (await client.get("/metrics")).text
    for name in ("enrich_events_total", "enrich_stream_batch_size", "enrich_model_latency_seconds",
                 "enrich_model_batch_size", "enrich_model_errors_total"):
        assert name in metrics
