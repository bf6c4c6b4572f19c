"""The service end to end on the real stack: documents through documents.v1, enriched events in, contextualized
events out, the query and document API. The LLM is an OpenAI-compatible stub here (these tests are not about
generation quality; test_embedded_llm.py runs the real model)."""

import asyncio
import time
from uuid import uuid4

import httpx
import pytest

from platform_common.kafka import DOCUMENTS, ENRICHED, Publisher, dlq
from platform_common.testing import decode_avro, read_messages
from rag.api import create_app
from rag.contextualize import NO_CONTEXT
from rag.service import RagService

DOCS = [
    ("resilience", "Operational resilience of payment services", "regulation",
     "Critical payment services must be restored within two hours after a disruption. A payment outage lasting "
     "longer is reported to the regulator as a major incident, with its cause and the customers affected."),
    ("complaints", "Complaint handling", "policy",
     "Customer complaints are acknowledged within five working days and resolved within eight weeks."),
]


def enriched(event_id: str, text: str | None, tenant: str = "default", label: str = "negative",
             age_s: float = 0.0) -> dict:
    now = int(time.time() * 1000)
    intensity, score = ("high", -0.8) if label == "negative" else ("low", 0.0)
    return {"event_id": event_id, "delivery_id": event_id, "source": "demo", "type": "incident.reported",
            "stream_id": f"stream-{event_id}", "tenant": tenant, "occurred_at": now, "received_at": now,
            "text": {"body": text} if text else {}, "metrics": {}, "attributes": {}, "raw_payload": "{}",
            "entities": [], "models": [], "enriched_at": now - int(age_s * 1000),
            "sentiment": [{"field": "body", "label": label, "intensity": intensity, "score": score}] if text else []}


@pytest.fixture
async def service(rag_settings, stub_chat, embedder, store):
    settings = rag_settings.model_copy(update={"rag_llm_backend": "openai", "rag_llm_url": stub_chat.url,
                                               "rag_llm_model": "stub-chat"})
    service = RagService(settings, embedder=embedder)
    await service.start()
    task = asyncio.create_task(service.run())
    yield service
    task.cancel()
    await service.stop()


async def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.3)
    return False


async def publish_docs(publisher: Publisher, topic: str) -> None:
    for doc_id, title, doc_type, content in DOCS:
        await publisher.publish(topic, doc_id, {
            "document_id": doc_id, "op": "upsert", "source_uri": f"file://ref/{doc_id}.md", "title": title,
            "content": content, "tenant": "default", "sector": "finance", "doc_type": doc_type, "metadata": {},
            "updated_at": int(time.time() * 1000)}, schema_of=DOCUMENTS)


async def docs_indexed(service: RagService) -> bool:
    return all([await service.store.get_document("default", d) for d, *_ in DOCS])


async def test_events_get_grounded_context_or_the_explicit_refusal(service, rag_settings, settings, api_keys):
    s = rag_settings
    publisher = Publisher(s)
    await publisher.start()
    try:
        await publish_docs(publisher, s.rag_documents_topic)
        # an upsert without content cannot be indexed: it goes to the DLQ with the reason
        await publisher.publish(s.rag_documents_topic, "broken", {
            "document_id": "broken", "op": "upsert", "source_uri": "x", "content": None,
            "updated_at": int(time.time() * 1000)}, schema_of=DOCUMENTS)
        assert await wait_for(lambda: docs_indexed(service))

        await publisher.publish(s.rag_enriched_topic, "stream-on", enriched(
            "on-topic", "Card payments have been down for three hours: a payment outage at the bank."),
            schema_of=ENRICHED)
        await publisher.publish(s.rag_enriched_topic, "stream-off", enriched(
            "off-topic", "The local football club won the cup final on penalties last night."), schema_of=ENRICHED)
        # the tiers: a calm event is not worth the model, a selected one past the freshness target is not waited
        # for, an event without text has nothing to ground
        await publisher.publish(s.rag_enriched_topic, "stream-calm", enriched(
            "calm", "Card payments at the bank now settle overnight.", label="neutral"), schema_of=ENRICHED)
        await publisher.publish(s.rag_enriched_topic, "stream-stale", enriched(
            "stale", "Card payments have been down for three hours: a payment outage.", age_s=60), schema_of=ENRICHED)
        await publisher.publish(s.rag_enriched_topic, "stream-metrics", enriched("metrics-only", None),
                                schema_of=ENRICHED)
    finally:
        await publisher.stop()

    messages = await asyncio.to_thread(read_messages, settings, s.rag_contextualized_topic, 5, 90)
    out = {v["event_id"]: v for v in (decode_avro(settings, m) for m in messages)}
    assert set(out) == {"on-topic", "off-topic", "calm", "stale", "metrics-only"}
    outcomes = {e: (v["outcome"], v["outcome_reason"]) for e, v in out.items()}
    assert outcomes["on-topic"] == ("generated", "risk: service_outage, strongly_negative_sentiment")
    assert outcomes["calm"] == ("retrieval_only", "not selected for generation")
    assert outcomes["stale"][0] == "retrieval_only" and "past the 5s freshness target" in outcomes["stale"][1]
    assert outcomes["metrics-only"] == ("skipped", "no text")
    assert outcomes["off-topic"] == ("retrieval_only", "no relevant passage")
    for event_id in ("calm", "stale"):  # no model, yet cited and grounded: the summary quotes the best passage
        quiet = out[event_id]
        assert quiet["grounded"] and quiet["model"] == "" and quiet["citations"]
        assert quiet["statements"][0]["chunk_ids"][0] == quiet["citations"][0]["chunk_id"]

    on = out["on-topic"]
    assert on["grounded"] and on["citations"] and on["model"] == "stub-chat"
    assert on["prompt_version"].startswith("category_summary.v1@") and on["index_version"]
    # the stub's second sentence holds a number in neither the passages nor the event: it was stripped
    assert "4321" not in on["category_summary"] and "outage" in on["category_summary"]
    assert "service_outage" in on["risk_flags"] and "strongly_negative_sentiment" in on["risk_flags"]
    assert all(st["chunk_ids"] for st in on["statements"])
    assert {c for st in on["statements"] for c in st["chunk_ids"]} == {c["chunk_id"] for c in on["citations"]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(service, api_keys.store)),
                                 base_url="http://rag", headers=api_keys.auth("default")) as http:
        for citation in on["citations"]:  # every citation resolves to a real chunk
            chunk = (await http.get(f"/v1/chunks/{citation['chunk_id']}")).json()
            assert chunk["document_id"] == citation["document_id"]
            assert chunk["source_uri"] == citation["source_uri"] == f"file://ref/{chunk['document_id']}.md"
    assert on["citations"][0]["document_id"] == "resilience"  # the best passage is the one on outages

    off = out["off-topic"]
    assert not off["grounded"] and off["citations"] == [] and off["statements"] == []
    assert off["category_summary"] == off["regulatory_note"] == NO_CONTEXT

    # the service shares this event loop: the blocking reader runs in a thread
    dead = await asyncio.to_thread(read_messages, settings, dlq(s.rag_documents_topic), 1, 20)
    assert dead and "non-empty content" in dict(dead[0].headers())["dlq.reason"].decode()


async def test_an_llm_outage_leaves_selected_events_retrieval_only_with_the_reason(service, rag_settings, settings,
                                                                                stub_chat):
    s = rag_settings
    stub_chat.down = True
    publisher = Publisher(s)
    await publisher.start()
    try:
        await publish_docs(publisher, s.rag_documents_topic)
        assert await wait_for(lambda: docs_indexed(service))
        # a text of its own, so no earlier generation answers it from the cache
        await publisher.publish(s.rag_enriched_topic, "stream-down", enriched(
            "llm-down", f"Card payments are down for hours, a payment outage ({uuid4().hex})."), schema_of=ENRICHED)
    finally:
        await publisher.stop()

    [message] = await asyncio.to_thread(read_messages, settings, s.rag_contextualized_topic, 1, 60)
    out = decode_avro(settings, message)
    assert stub_chat.requests, "the model was not asked"
    assert out["outcome"] == "retrieval_only"
    assert "but the generation failed: LLMError" in out["outcome_reason"]
    assert out["grounded"] and out["citations"] and out["model"] == ""
    assert await asyncio.to_thread(read_messages, settings, dlq(s.rag_enriched_topic), 1, 3) == []


async def test_a_batch_generates_concurrently_against_an_openai_compatible_server(service, rag_settings, settings,
                                                                                 stub_chat):
    s = rag_settings
    stub_chat.delay = 0.5
    publisher = Publisher(s)
    await publisher.start()
    try:
        await publish_docs(publisher, s.rag_documents_topic)
        assert await wait_for(lambda: docs_indexed(service))
        run = uuid4().hex  # texts of their own, so no earlier generation answers them from the cache
        acks = [await publisher.enqueue(s.rag_enriched_topic, f"stream-c{n}", enriched(
            f"concurrent-{n}", f"Card payments are down, a payment outage ({run} {n})."), schema_of=ENRICHED)
            for n in range(6)]
        await asyncio.gather(*acks)  # handed over together: the contextualizer takes them as one batch
    finally:
        await publisher.stop()

    messages = await asyncio.to_thread(read_messages, settings, s.rag_contextualized_topic, 6, 60)
    outcomes = {v["event_id"]: v["outcome"] for v in (decode_avro(settings, m) for m in messages)}
    assert outcomes == {f"concurrent-{n}": "generated" for n in range(6)}
    assert stub_chat.most_in_flight > 1, "the generations of the batch went one at a time"


async def test_query_and_document_api(service, api_keys):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(service, api_keys.store)),
                                 base_url="http://rag", headers=api_keys.auth("default")) as http:
        for doc_id, title, doc_type, content in DOCS:
            r = await http.post("/v1/documents", json={"document_id": doc_id, "title": title, "content": content,
                                                       "doc_type": doc_type, "source_uri": f"file://ref/{doc_id}.md"})
            assert r.status_code == 200 and r.json()["status"] == "created" and r.json()["tenant"] == "default"
        again = await http.post("/v1/documents", json={"document_id": "complaints", "title": DOCS[1][1],
                                                       "content": DOCS[1][3], "doc_type": "policy",
                                                       "source_uri": "file://ref/complaints.md"})
        assert again.json()["status"] == "unchanged" and again.json()["embedded"] == 0

        r = await http.post("/v1/query", json={"question": "How fast must complaints be acknowledged?",
                                               "filters": {"doc_type": "policy"}, "k": 3})
        body = r.json()
        assert r.status_code == 200 and body["grounded"] and body["model"] == "stub-chat"
        assert [c["document_id"] for c in body["citations"]] == ["complaints"]
        assert body["citations"][0]["source_uri"] == "file://ref/complaints.md"
        assert set(body["timings_ms"]) == {"retrieval", "generation", "total"}

        r = await http.post("/v1/query", json={"question": "Who won the football cup final?"})
        assert r.json()["answer"] == NO_CONTEXT and r.json()["citations"] == []

        bad = await http.post("/v1/query", json={"question": "", "k": 500})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request" and "\n" not in bad.text
        bad = await http.post("/v1/documents", json={"document_id": "x", "content": "  "})
        assert bad.status_code == 422 and bad.json() == {"error": "invalid_document",
                                                         "detail": "an upsert needs non-empty content"}

        assert (await http.delete("/v1/documents/complaints")).json()["status"] == "deleted"
        assert (await http.get("/v1/documents/complaints")).status_code == 404
        assert (await http.delete("/v1/documents/complaints")).status_code == 404
        registry = (await http.get("/v1/indexes")).json()
        assert registry[0]["doc_count"] == 1 and registry[0]["embedder_name"] == "all-MiniLM-L6-v2"
        assert (await http.get("/readyz")).status_code == 200
        assert "rag_retrieval_duration_seconds" in (await http.get("/metrics")).text


async def test_a_generated_answer_cites_its_prompt_passages_and_is_checked(service, api_keys,
                                                                        stub_chat):
    """The stub's answer holds a number no passage holds (stripped, as in contextualized events); the answer cites
    the passages its prompt held, not every retrieved one."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(service, api_keys.store)),
                                 base_url="http://rag", headers=api_keys.auth("default")) as http:
        for doc_id, title, doc_type, content in DOCS:
            await http.post("/v1/documents", json={"document_id": doc_id, "title": title, "content": content,
                                                   "doc_type": doc_type, "source_uri": f"file://ref/{doc_id}.md"})
        # a question of its own: an answer to an asked one may come from the generation cache, not the stand-in
        question = f"What happens after a payment outage and how fast are complaints acknowledged? ({uuid4().hex})"
        retrieved = (await http.post("/v1/query", json={"question": question, "k": 5, "generate": False})).json()
        answered = (await http.post("/v1/query", json={"question": question, "k": 5})).json()
    prompt = stub_chat.requests[-1]["messages"][-1]["content"]
    assert len(retrieved["citations"]) >= 2 and answered["grounded"]
    assert [c["chunk_id"] for c in answered["citations"]] == [c["chunk_id"] for c in retrieved["citations"]][:2]
    assert all(c["text"][:40] in prompt for c in answered["citations"])
    assert "4321" not in answered["answer"] and "resilience rules" in answered["answer"]


async def test_a_citation_of_a_replaced_version_still_resolves(service, api_keys):
    """A document's new version replaces its chunks in the index; the old chunks stay resolvable for the citations
    that named them (marked superseded), and leave with the document when it is deleted."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(service, api_keys.store)),
                                 base_url="http://rag", headers=api_keys.auth("default")) as http:
        def upsert(content: str):
            return http.post("/v1/documents", json={"document_id": "complaints", "title": "Complaint handling",
                                                    "content": content, "doc_type": "policy",
                                                    "source_uri": "file://ref/complaints.md"})
        await upsert(DOCS[1][3])
        question = {"question": "How fast must complaints be acknowledged?", "generate": False}
        [old] = [c["chunk_id"] for c in (await http.post("/v1/query", json=question)).json()["citations"]]
        await upsert("Customer complaints are acknowledged within three working days and resolved in six weeks.")
        [new] = [c["chunk_id"] for c in (await http.post("/v1/query", json=question)).json()["citations"]]
        was, now = (await http.get(f"/v1/chunks/{old}")).json(), (await http.get(f"/v1/chunks/{new}")).json()
        assert new != old and "five working days" in was["text"] and was["superseded_at"]
        assert "three working days" in now["text"] and now["superseded_at"] is None
        await http.delete("/v1/documents/complaints")
        assert (await http.get(f"/v1/chunks/{old}")).status_code == 404
