"""End to end through the real Kafka and registry: `python -m enrich` (local models) as a subprocess."""

import time
import uuid

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from enrich.testing import EnrichProcess, TopicReader, publish_raw, raw_event
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

    event = raw_event({"body": TEXT, "title": "Awful delay, the support was terrible and slow."},
                      stream_id="stream-e2e")
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
    assert value["enrichment_status"] == "ok" and value["languages"] == {"body": "en", "title": "en"}
    encoder, patterns = "minilm-multitask", "pattern-gazetteer-ner"
    found = {(e["field"], e["text"], e["label"], e["model"]) for e in value["entities"]}
    assert {("body", "Tim Cook", "PERSON", encoder), ("body", "Apple", "ORG", encoder),
            ("body", "Paris", "LOCATION", encoder), ("body", "March 3, 2025", "DATE", patterns),
            ("body", "$999", "MONEY", patterns), ("body", "12%", "PERCENT", patterns)} <= found
    for e in value["entities"]:
        assert event["text"][e["field"]][e["start"]:e["end"]] == e["text"]
    sentiment = {s["field"]: s for s in value["sentiment"]}
    assert (sentiment["body"]["label"], sentiment["body"]["polarity"]) == ("positive", "positive")
    assert (sentiment["title"]["label"], sentiment["title"]["polarity"]) == ("negative", "negative")
    assert sentiment["title"]["score"] < 0 < sentiment["body"]["score"]
    assert all(s["model"] == encoder for s in value["sentiment"])
    assert {(m["task"], m["name"]) for m in value["models"]} == {("sentiment", encoder), ("ner", encoder),
                                                                  ("ner", patterns)}
    assert all(m["version"] for m in value["models"])
    traceparent = dict(headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == trace_id, "the enriched record does not continue the raw record's trace"


async def test_records_that_cannot_be_enriched_pass_through_with_a_status(service, reader, publisher, common_settings):
    events = {"empty": raw_event({}), "too_large": raw_event({"body": "word " * 5000}),
              "not_text": raw_event({"body": "\x00\x01\x02\x03 binary \x04\x05"}),
              "partial": raw_event({"ok": "Fine service in London.", "huge": "x" * 30000}),
              "unsupported_language": raw_event({"body": "这是一个关于客户服务的测试句子，服务很好"})}
    await publish_raw(publisher, common_settings, service.input, list(events.values()))
    found = reader.poll_until({e["event_id"] for e in events.values()}, 60)
    statuses = {status: found[e["event_id"]][0]["enrichment_status"] for status, e in events.items()}
    assert statuses == {s: s for s in events}
    partial = found[events["partial"]["event_id"]][0]
    assert [e["text"] for e in partial["entities"]] == ["London"] and partial["text"] == events["partial"]["text"]
    assert not found[events["empty"]["event_id"]][0]["models"]
    chinese = found[events["unsupported_language"]["event_id"]][0]
    # no model covers Chinese: nothing is guessed, the language is said
    assert chinese["languages"] == {"body": "zh"} and not chinese["entities"] and not chinese["sentiment"]


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
    assert headers["dlq.reason"] and headers["dlq.exception.type"] and headers["dlq.stack"]
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
