"""The `triton` backend against a real KServe V2 server (MLServer with enrich's runtime): same results as `local`,
through Kafka; and the client's timeout and circuit breaker against real sockets."""

import asyncio
import time

import pytest
from enrich.client import CircuitBreaker, ModelClient, ModelUnavailable, TritonBackend
from enrich.testing import TopicReader, publish_raw, raw_event
from platform_common.testing import free_port

TEXTS = [
    "Tim Cook said Apple will ship the iPhone 15 Pro in Paris on March 3, 2025 for $999. Great news, up 12%!",
    "Terrible support from Acme Holdings Inc., my MacBook Pro broke again :(",
    "Dr. Emily Carter met Elon Musk in New York City at 10:30 am on 2024-05-01; revenue was 3.5 million EUR.",
    "Ünïcode 😀 text: Satya Nadella visited Zürich and Berlin last week, not bad at all.",
    "meh",
    "Shares of Nvidia rose 4.2% on Wall Street today while Tesla fell 3 percent.",
]


async def test_local_and_triton_backends_give_identical_enriched_events(enrich_process, mlserver, publisher,
                                                                       common_settings):
    local = enrich_process()
    remote = enrich_process(ENRICH_BACKEND="triton", ENRICH_TRITON_URL=mlserver)
    remote.input = local.input  # both consume the same raw events, each in its own group, into its own topic
    remote.env["ENRICH_INPUT_TOPIC"] = local.input
    events = [raw_event({"body": t, "title": TEXTS[-1 - i]}, stream_id=f"s{i % 3}") for i, t in enumerate(TEXTS)]
    events.append(raw_event({}))
    await publish_raw(publisher, common_settings, local.input, events)
    for p in (local, remote):
        p.start()
    ids = {e["event_id"] for e in events}
    readers = [TopicReader(common_settings, p.output) for p in (local, remote)]
    try:
        local_out, remote_out = (r.poll_until(ids, 90) for r in readers)
    finally:
        for r in readers:
            r.close()
    assert local_out.keys() == remote_out.keys() == ids
    compared = ("entities", "sentiment", "models", "enrichment_status", "text", "stream_id")
    for event_id in ids:
        mine, theirs = local_out[event_id][0], remote_out[event_id][0]
        assert {k: mine[k] for k in compared} == {k: theirs[k] for k in compared}
    assert sum(len(v[0]["entities"]) for v in remote_out.values()) > 20


async def test_triton_backend_answers_like_the_models(mlserver):
    backend = TritonBackend("ner", mlserver)
    try:
        results, ref = await backend.infer(TEXTS[:2])
    finally:
        await backend.close()
    assert ref.name == "pattern-gazetteer-ner" and ref.version
    assert [e["text"] for e in results[0]["entities"]][:3] == ["Tim Cook", "Apple", "iPhone 15 Pro"]


async def test_unreachable_server_opens_the_circuit_and_fails_fast():
    client = ModelClient("sentiment", TritonBackend("sentiment", f"127.0.0.1:{free_port()}"), max_batch=8,
                         max_wait_s=0.001, inflight=1, timeout_s=2, breaker=CircuitBreaker(2, reset_s=30))
    await client.start()
    try:
        for _ in range(2):
            with pytest.raises(ModelUnavailable):
                await client.predict(["hello"])
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match="circuit open"):
            await client.predict(["hello"])
        assert time.monotonic() - started < 0.1
    finally:
        await client.close()


async def test_slow_server_times_out():
    # a real socket that accepts and never answers
    server = await asyncio.start_server(lambda r, w: asyncio.sleep(30), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ModelClient("ner", TritonBackend("ner", f"127.0.0.1:{port}"), max_batch=8, max_wait_s=0.001,
                         inflight=1, timeout_s=0.3, breaker=CircuitBreaker(5, reset_s=30))
    await client.start()
    try:
        started = time.monotonic()
        with pytest.raises(ModelUnavailable):
            await client.predict(["hello"])
        assert time.monotonic() - started < 1.5
    finally:
        await client.close()
        server.close()


async def test_micro_batcher_merges_concurrent_calls_and_bounds_the_batch(mlserver):
    seen: list[int] = []
    backend = TritonBackend("sentiment", mlserver)
    infer = backend.infer

    async def recording(texts):
        seen.append(len(texts))
        return await infer(texts)

    backend.infer = recording
    client = ModelClient("sentiment", backend, max_batch=16, max_wait_s=0.05, inflight=2, timeout_s=5,
                         breaker=CircuitBreaker(3, 5))
    await client.start()
    try:
        answers = await asyncio.gather(*(client.predict([f"good {i}", f"bad {i}"]) for i in range(20)))
    finally:
        await client.close()
    assert [len(results) for results, _ in answers] == [2] * 20
    assert sum(seen) == 40 and max(seen) <= 16 and len(seen) <= 4


async def test_record_the_model_refuses_goes_to_the_dlq_and_the_rest_is_enriched(enrich_process, mlserver, publisher,
                                                                                 common_settings):
    # the client accepts texts the server refuses (MLServer's limit is 20,000 characters in model-settings.json)
    service = enrich_process(ENRICH_BACKEND="triton", ENRICH_TRITON_URL=mlserver, ENRICH_MAX_TEXT_CHARS="100000",
                             LOG_LEVEL="INFO")
    refused = raw_event({"body": "call me on +44 20 7946 0958 " + "a" * 30_000}, stream_id="s1")
    fine = [raw_event({"body": t}, stream_id=f"s{i}") for i, t in enumerate(TEXTS)]
    await publish_raw(publisher, common_settings, service.input, [fine[0], refused, *fine[1:]])
    service.start()
    reader = TopicReader(common_settings, service.output)
    try:
        found = reader.poll_until({e["event_id"] for e in fine} | {refused["event_id"]}, 30)
    finally:
        reader.close()
    assert found.keys() == {e["event_id"] for e in fine}

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    consumer = Consumer({"bootstrap.servers": common_settings.kafka_bootstrap_servers, "group.id": "dlq-reader"})
    consumer.assign([TopicPartition(f"{service.input}.dlq", p, OFFSET_BEGINNING) for p in range(3)])
    try:
        deadline, msg = time.monotonic() + 20, None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
    finally:
        consumer.close()
    assert msg is not None and not msg.error()
    reason = dict(msg.headers())["dlq.reason"].decode()
    assert reason.startswith("model failed") and "20000 characters" in reason
    value = AvroDeserializer(SchemaRegistryClient({"url": common_settings.schema_registry_url}))(
        msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
    assert value["event_id"] == refused["event_id"]
    assert "7946" not in value["text"]["body"] and "[PHONE]" in value["text"]["body"]
    log = service.log_path.read_text()
    assert "dead-lettering" in log and "7946 0958" not in log
