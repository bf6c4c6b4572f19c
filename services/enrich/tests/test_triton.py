"""The `triton` backend against a real Triton Inference Server (nvidia-pytriton's, serving deploy/triton): same
enriched events as `local` through Kafka, same scores on a test subset, the model version asked for is the
artifact's; and the client's timeout, circuit breaker and micro-batcher against real sockets."""

import asyncio
import hashlib
import time

import numpy as np
import pytest

from enrich.client import CircuitBreaker, ModelClient, ModelUnavailable, TritonBackend
from enrich.datasets import read_conll
from enrich.evaluation import encoder_ner
from enrich.models import get_model
from enrich.models.transformer import artifact_dir, buckets
from enrich.testing import REPO, TopicReader, publish_raw, raw_event
from platform_common.testing import free_port

TEXTS = [
    "Tim Cook said Apple will ship the iPhone 15 Pro in Paris on March 3, 2025 for $999. Great news, up 12%!",
    "Terrible support from Acme Holdings Inc., my MacBook Pro broke again :(",
    "Dr. Emily Carter met Elon Musk in New York City at 10:30 am on 2024-05-01; revenue was 3.5 million EUR.",
    "Ünïcode 😀 text: Satya Nadella visited Zürich and Berlin last week, not bad at all.",
    "meh",
    "Shares of Nvidia rose 4.2% on Wall Street today while Tesla fell 3 percent.",
]


def same_enrichment(a: list[dict], b: list[dict]) -> None:
    """Equal up to float rounding: ONNX Runtime in two environments (their versions may differ) runs one file."""
    for x, y in zip(a, b, strict=True):
        spans = lambda r: [(e["start"], e["end"], e["label"], e["model"]) for e in r["entities"]]  # noqa: E731
        assert spans(x) == spans(y)
        assert x["sentiment"]["label"] == y["sentiment"]["label"]
        assert x["sentiment"]["score"] == pytest.approx(y["sentiment"]["score"], abs=0.02)


def test_triton_serves_the_committed_artifact():
    served = REPO / "deploy" / "triton" / "minilm_multitask" / get_model("text").encoder.version / "model.onnx"
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(served) == digest(artifact_dir() / "model.onnx")


async def test_triton_backend_answers_like_the_local_model(triton):
    backend = TritonBackend("text", triton)
    try:
        results, refs = await backend.infer(TEXTS)
    finally:
        await backend.close()
    local = get_model("text")
    assert refs == local.refs
    same_enrichment(results, local.predict(TEXTS))
    assert ("Tim Cook", "PERSON") in {(e["text"], e["label"]) for e in results[0]["entities"]}


async def test_triton_scores_like_local_on_a_test_subset(triton):
    model = get_model("text").encoder
    backend = TritonBackend("text", triton)
    loop = asyncio.get_running_loop()

    def run(prepared):  # the evaluation calls the encoder synchronously; it runs on Triton here
        return asyncio.run_coroutine_threadsafe(backend.run(prepared), loop).result(30)

    sentences = read_conll("en", "test")[:200]
    try:
        remote = await asyncio.to_thread(encoder_ner, model, sentences, run)
    finally:
        await backend.close()
    local = encoder_ner(model, sentences)
    assert remote["f1"] == pytest.approx(local["f1"], abs=0.005) and local["f1"] > 0.5


async def test_an_unknown_model_version_is_unavailable_not_a_refusal(triton):
    backend = TritonBackend("text", triton)
    backend.model.encoder.version = "999"
    try:
        with pytest.raises(ModelUnavailable):
            await backend.run(backend.model.prepare(["hello"]))
    finally:
        backend.model.encoder.version = get_model("text").encoder.version
        await backend.close()


async def test_local_and_triton_backends_give_the_same_enriched_events(enrich_process, triton, publisher,
                                                                       common_settings):
    local = enrich_process()
    remote = enrich_process(ENRICH_BACKEND="triton", ENRICH_TRITON_URL=triton)
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
    same_entities = total = same_sentiment = fields = 0
    for event_id in ids:
        mine, theirs = local_out[event_id][0], remote_out[event_id][0]
        for key in ("models", "enrichment_status", "text", "stream_id", "languages"):
            assert mine[key] == theirs[key]
        spans = lambda v: {(e["field"], e["start"], e["end"], e["label"], e["model"]) for e in v["entities"]}  # noqa
        same_entities += len(spans(mine) & spans(theirs))
        total += len(spans(mine) | spans(theirs))
        labels = lambda v: {(s["field"], s["label"], s["polarity"]) for s in v["sentiment"]}  # noqa: E731
        same_sentiment += len(labels(mine) & labels(theirs))
        fields += len(mine["sentiment"])
    # int8 scales activations per batch and the two services batch differently: labels may rarely differ
    assert same_entities >= 0.9 * total and same_sentiment >= 0.9 * fields
    assert sum(len(v[0]["entities"]) for v in remote_out.values()) > 20


async def test_unreachable_server_opens_the_circuit_and_fails_fast():
    client = ModelClient("text", TritonBackend("text", f"127.0.0.1:{free_port()}"), max_batch=8,
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
    client = ModelClient("text", TritonBackend("text", f"127.0.0.1:{port}"), max_batch=8, max_wait_s=0.001,
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


async def test_micro_batcher_merges_concurrent_calls_and_bounds_the_batch(triton):
    seen: list[int] = []
    backend = TritonBackend("text", triton)
    infer = backend.infer

    async def recording(texts):
        seen.append(len(texts))
        return await infer(texts)

    backend.infer = recording
    client = ModelClient("text", backend, max_batch=16, max_wait_s=0.05, inflight=2, timeout_s=10,
                         breaker=CircuitBreaker(3, 5))
    await client.start()
    try:
        answers = await asyncio.gather(*(client.predict([f"good {i}", f"bad {i}"]) for i in range(20)))
    finally:
        await client.close()
    assert [len(results) for results, _ in answers] == [2] * 20
    assert sum(seen) == 40 and max(seen) <= 16 and len(seen) <= 4


async def test_rows_go_in_requests_of_similar_length_within_the_servers_batch_limit(triton):
    backend = TritonBackend("text", triton)
    texts = ["Angela Merkel met Emmanuel Macron in Paris. " * 300] * 3 + ["Short one.", "Rome."]
    prepared = backend.model.prepare(texts)  # about 25 windows per long text, 2 short rows
    groups = buckets(prepared, 10)
    assert len(prepared.input_ids) > 60 and max(len(rows) for rows, _ in groups) == 10
    # the two short rows go together, not padded to the long texts' 128 tokens
    assert buckets(prepared, 2)[0][1]["input_ids"].shape[1] < 10 < prepared.input_ids.shape[1]
    backend.max_rows = 10
    try:
        token_logits, sentiment_logits = await backend.run(prepared)
    finally:
        await backend.close()
    # Triton's dynamic batcher may merge requests, and int8 scales activations per batch: close, not equal
    local = get_model("text").encoder.run(prepared, bucket=10)
    real = prepared.attention_mask.astype(bool)
    assert (token_logits.argmax(-1) == local[0].argmax(-1))[real].mean() > 0.98
    assert np.abs(token_logits - local[0])[real].max() < 0.5 and np.abs(sentiment_logits - local[1]).max() < 0.5
