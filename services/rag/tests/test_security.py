"""rag's API as a tenant would abuse it, on the real stack: the authorization matrix generated from the route table,
tenants sealed from each other (API, documents.v1, the event stream), the shared namespace, the per-key generation
limit, body and field limits, and the migration of a first-release index."""

import asyncio
import hashlib
import time

import asyncpg
import httpx
import pytest

from platform_common.kafka import DOCUMENTS, ENRICHED, Publisher, dlq
from platform_common.testing import decode_avro, read_messages
from rag.api import PUBLIC_PATHS, create_app
from rag.chunking import ChunkingConfig
from rag.ingest import Indexer
from rag.ratelimit import GenerationLimit
from rag.retrieval import Retriever
from rag.service import RagService
from rag.store import MIGRATIONS, Filters, Store, index_version
from support.authz import Keys, authz_cases, check, concrete

ACME_FRAUD = ("Acme card fraud rules: a chargeback on a card flagged for phishing is frozen by the acme-vault team "
              "within 15 minutes and reported to Acme's fraud desk.")
GLOBEX_POLICY = "Globex refunds are paid within 30 days of a complaint, by bank transfer only."
SHARED_OUTAGE = ("Payment outage rule for every firm: critical payment services are restored within two hours; a "
                 "longer outage is reported to the regulator as a major incident.")


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


def client(service, keys, name: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(create_app(service, keys.store)), base_url="http://rag",
                             headers=keys.auth(name) if name else None)


async def wait_for(predicate, timeout=45.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.3)
    return False


async def test_every_route_has_a_policy_and_the_matrix_holds(service):
    keys = Keys.create()
    app = create_app(service, keys.store)
    cases = authz_cases(app, keys, public=set(PUBLIC_PATHS))
    assert {c.path for c in cases} >= {"/v1/query", "/v1/documents", "/v1/documents/{document_id}",
                                       "/v1/chunks/{chunk_id:path}", "/v1/indexes"}
    bodies = {"/v1/query": {"question": "payment outage", "generate": False},
              "/v1/documents": {"document_id": "matrix", "op": "delete"}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://rag") as http:
        for case in cases:
            headers = {"Authorization": f"Bearer {case.token}"} if case.token else {}
            response = await http.request(case.method, concrete(case.path), headers=headers,
                                          json=bodies.get(case.path) if case.method == "POST" else None)
            check(response.status_code, response.json(), case)
            if case.expect == "401":
                assert response.headers["www-authenticate"] == "Bearer"
        # the ops endpoints are the only open ones
        assert (await http.get("/healthz")).status_code == 200


async def test_tenants_never_see_or_touch_each_others_documents(service, api_keys):
    async with client(service, api_keys, "acme") as acme, client(service, api_keys, "globex") as globex, \
            client(service, api_keys, "acme_reader") as reader:
        # the same document id in two tenants: two documents, neither overwrites nor moves the other
        assert (await acme.post("/v1/documents", json={"document_id": "policy", "content": ACME_FRAUD,
                                                       "title": "Acme fraud"})).json()["tenant"] == "acme"
        assert (await globex.post("/v1/documents", json={"document_id": "policy", "content": GLOBEX_POLICY,
                                                         "title": "Globex refunds"})).json()["status"] == "created"
        mine = (await acme.get("/v1/documents/policy")).json()
        theirs = (await globex.get("/v1/documents/policy")).json()
        assert (mine["tenant"], mine["title"]) == ("acme", "Acme fraud")
        assert (theirs["tenant"], theirs["title"]) == ("globex", "Globex refunds")

        # globex asks about acme's subject: nothing of acme's comes back, in any mode
        for mode in ("hybrid", "dense", "keyword"):
            body = (await globex.post("/v1/query", json={"question": "acme-vault chargeback phishing fraud desk",
                                                         "generate": False, "k": 10, "mode": mode})).json()
            assert all("acme" not in c["text"].lower() for c in body["citations"]), body
        found = (await acme.post("/v1/query", json={"question": "acme-vault chargeback phishing fraud desk",
                                                    "generate": False})).json()
        assert found["citations"] and "acme-vault" in found["citations"][0]["text"]  # the control: acme finds it

        acme_chunk = mine["chunks"][0]["chunk_id"]
        assert (await reader.get(f"/v1/chunks/{acme_chunk}")).status_code == 200
        assert (await globex.get(f"/v1/chunks/{acme_chunk}")).status_code == 404
        # deleting acme's document as globex deletes globex's own (same id) and nothing of acme's
        assert (await globex.delete("/v1/documents/policy")).json()["tenant"] == "globex"
        assert (await globex.delete("/v1/documents/policy")).status_code == 404
        assert (await acme.get("/v1/documents/policy")).json()["title"] == "Acme fraud"
        # a reader cannot write; the tenant is never taken from the body, nor the shared flag
        assert (await reader.post("/v1/documents", json={"document_id": "x", "content": "y"})).status_code == 403
        for extra in ({"tenant": "globex"}, {"metadata": {"shared": "true"}}):
            refused = await acme.post("/v1/documents", json={"document_id": "x", "content": "y", **extra})
            assert refused.status_code == 422 and refused.json()["error"] == "invalid_request"
        refused = await acme.post("/v1/query", json={"question": "q", "filters": {"tenant": "globex"}})
        assert refused.status_code == 422
        # the registry counts the caller's documents only
        [index] = (await globex.get("/v1/indexes")).json()
        assert (index["doc_count"], index["chunk_count"]) == (0, 0)
        assert (await acme.get("/v1/indexes")).json()[0]["doc_count"] == 1


async def test_shared_documents_come_only_from_documents_v1_with_the_flag_and_everyone_reads_them(
        service, api_keys, rag_settings, settings):
    s = rag_settings
    publisher = Publisher(s)
    await publisher.start()
    now = int(time.time() * 1000)
    try:
        await publisher.publish(s.rag_documents_topic, "outage", {
            "document_id": "outage", "op": "upsert", "source_uri": "file://ref/outage.md", "title": "Payment outages",
            "content": SHARED_OUTAGE, "tenant": "_shared", "sector": None, "doc_type": "regulation",
            "metadata": {"shared": "true"}, "updated_at": now}, schema_of=DOCUMENTS)
        # naming the reserved tenant without the flag is refused (to the DLQ), not published to everyone
        await publisher.publish(s.rag_documents_topic, "forged", {
            "document_id": "forged", "op": "upsert", "source_uri": "x", "title": "Forged", "content": "Forged text.",
            "tenant": "_shared", "sector": None, "doc_type": None, "metadata": {}, "updated_at": now},
            schema_of=DOCUMENTS)
        await publisher.publish(s.rag_documents_topic, "acme-fraud", {
            "document_id": "acme-fraud", "op": "upsert", "source_uri": "file://acme/fraud.md", "title": "Acme fraud",
            "content": ACME_FRAUD, "tenant": "acme", "sector": None, "doc_type": "policy", "metadata": {},
            "updated_at": now}, schema_of=DOCUMENTS)
        assert await wait_for(lambda: service.store.get_document("acme", "acme-fraud"))
        assert await wait_for(lambda: service.store.get_document("_shared", "outage"))
        dead = await asyncio.to_thread(read_messages, settings, dlq(s.rag_documents_topic), 1, 20)
        assert "needs metadata shared=true" in dict(dead[0].headers())["dlq.reason"].decode()
        assert await service.store.get_document("_shared", "forged") is None

        async with client(service, api_keys, "acme") as acme, client(service, api_keys, "globex") as globex:
            for http in (acme, globex):
                body = (await http.post("/v1/query", json={"question": "how fast is a payment outage restored",
                                                           "generate": False})).json()
                assert body["citations"][0]["document_id"] == "outage" and body["citations"][0]["shared"]
                assert (await http.get("/v1/documents/outage")).json()["tenant"] == "_shared"
                assert (await http.delete("/v1/documents/outage")).status_code == 404  # no key may delete it
            assert await service.store.get_document("_shared", "outage") is not None

        # the stream path: an event retrieves its own tenant's and the shared documents only
        def event(event_id: str, tenant: str) -> dict:
            return {"event_id": event_id, "delivery_id": event_id, "source": "demo", "type": "fraud.reported",
                    "stream_id": f"s-{event_id}", "tenant": tenant, "occurred_at": now, "received_at": now,
                    "text": {"body": "A phishing chargeback on a flagged card: is the acme-vault team freezing it?"},
                    "metrics": {}, "attributes": {}, "raw_payload": "{}", "entities": [], "sentiment": [],
                    "models": [], "enriched_at": now}
        await publisher.publish(s.rag_enriched_topic, "s-a", event("from-acme", "acme"), schema_of=ENRICHED)
        await publisher.publish(s.rag_enriched_topic, "s-g", event("from-globex", "globex"), schema_of=ENRICHED)
    finally:
        await publisher.stop()
    out = {v["event_id"]: v for v in (decode_avro(settings, m) for m in await asyncio.to_thread(
        read_messages, settings, s.rag_contextualized_topic, 2, 90))}
    assert "acme-fraud" in {c["document_id"] for c in out["from-acme"]["citations"]}  # the control
    assert not {c["document_id"] for c in out["from-globex"]["citations"]} & {"acme-fraud"}
    assert "acme-vault" not in out["from-globex"]["category_summary"] + out["from-globex"]["regulatory_note"]


async def test_generation_is_rate_limited_per_key(service, api_keys, run_id):
    service.generation_limit = GenerationLimit(service.redis, 2, prefix=f"rag:genlimit:test-{run_id}")
    if time.time() % 60 > 50:  # the limit counts per minute: start the test well inside one
        await asyncio.sleep(61 - time.time() % 60)
    async with client(service, api_keys, "acme") as acme, client(service, api_keys, "globex") as globex:
        question = {"question": "How fast are refunds paid?"}
        assert [(await acme.post("/v1/query", json=question)).status_code for _ in range(2)] == [200, 200]
        limited = await acme.post("/v1/query", json=question)
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # retrieval alone is not limited, and another key has its own budget
        assert (await acme.post("/v1/query", json={**question, "generate": False})).status_code == 200
        assert (await globex.post("/v1/query", json=question)).status_code == 200


async def test_bodies_and_fields_are_size_limited(service, api_keys):
    service.settings = service.settings.model_copy(update={"rag_max_body_bytes": 64 * 1024})
    async with client(service, api_keys, "acme") as acme:
        big = {"document_id": "big", "content": "word " * 20_000}
        refused = await acme.post("/v1/documents", json=big)
        assert refused.status_code == 413 and refused.json()["error"] == "payload_too_large"

        async def chunked():  # no Content-Length: counted as it streams
            for _ in range(20):
                yield b" " * 8192
        refused = await acme.post("/v1/documents", content=chunked(), headers={"content-type": "application/json"})
        assert refused.status_code == 413
        for field, value in (("document_id", "d" * 513), ("title", "t" * 1001), ("source_uri", "u" * 2049),
                             ("metadata", {f"k{i}": "v" for i in range(51)})):
            body = {"document_id": "d", "content": "text", field: value}
            answer = await acme.post("/v1/documents", json=body)
            assert answer.status_code == 422 and field in answer.json()["detail"], (field, answer.text)
        assert (await acme.post("/v1/query", json={"question": "q" * 2001})).status_code == 422


OLD_CHUNKS = """
    CREATE TABLE {s}.{t} (
        chunk_id text PRIMARY KEY, document_id text NOT NULL, ordinal int NOT NULL, text text NOT NULL,
        char_start int NOT NULL, char_end int NOT NULL, title text NOT NULL DEFAULT '', source_uri text NOT NULL,
        tenant text NOT NULL, sector text, doc_type text, content_hash text NOT NULL, ingested_at timestamptz NOT NULL,
        embedding vector({dim}) NOT NULL,
        tsv tsvector GENERATED ALWAYS AS
            (setweight(to_tsvector('english', title), 'A') || to_tsvector('english', text)) STORED);
    CREATE INDEX {t}_doc ON {s}.{t} (document_id, content_hash);
    CREATE INDEX {t}_tenant ON {s}.{t} (tenant);"""


async def test_a_first_release_index_is_upgraded_to_tenant_keys(rag_settings, embedder):
    """The tables as the first release made them (documents and chunks keyed by id alone, reports indexed as
    documents) are migrated in place: rows kept with their tenant, reports removed, counts right."""
    s = rag_settings.rag_db_schema
    chunking = ChunkingConfig(max_words=20, overlap_words=5)
    version = index_version(embedder.name, embedder.version, chunking)
    t = "chunks_" + hashlib.sha256(version.encode()).hexdigest()[:12]
    await embedder.load()
    conn = await asyncpg.connect(rag_settings.database_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute((MIGRATIONS / "0001_documents_and_indexes.sql").read_text().replace("{s}", s))
        await conn.execute(OLD_CHUNKS.format(s=s, t=t, dim=embedder.dim))
        await conn.execute(f"INSERT INTO {s}.indexes (index_version, table_name, embedder_name, embedder_version, "
                           "dim, chunking, doc_count, chunk_count, active) VALUES ($1, $2, $3, $4, $5, $6, 2, 2, true)",
                           version, t, embedder.name, embedder.version, embedder.dim,
                           '{"method": "sentences", "max_words": 20, "overlap_words": 5}')
        vectors = await embedder.embed(["Outage\n" + SHARED_OUTAGE, "Report\nThe period saw 49 events."])
        for (doc, title, text, doc_type), vector in zip(
                [("outage", "Outage", SHARED_OUTAGE, "regulation"),
                 ("report-1", "Report", "The period saw 49 events.", "report")], vectors, strict=True):
            await conn.execute(f"INSERT INTO {s}.documents (document_id, source_uri, title, content, content_hash, "
                               "tenant, doc_type, updated_at) VALUES ($1, 'u', $2, $3, 'h', 'default', $4, now())",
                               doc, title, text, doc_type)
            await conn.execute(f"INSERT INTO {s}.{t} (chunk_id, document_id, ordinal, text, char_start, char_end, "
                               "title, source_uri, tenant, doc_type, content_hash, ingested_at, embedding) VALUES "
                               "($1, $2, 0, $3, 0, 10, $4, 'u', 'default', $5, 'h', now(), $6::text::vector)",
                               f"{doc}@h-0", doc, text, title, doc_type, str(list(map(float, vector))))
    finally:
        await conn.close()

    store = await Store.connect(rag_settings.database_url, s)
    try:
        indexer = Indexer(store, embedder, chunking)
        await indexer.open()
        assert indexer.index.table == t  # the old index is the one in use, upgraded, not rebuilt beside it
        keys = {r["table"]: list(r["columns"]) for r in await store.pool.fetch("""
            SELECT c.conrelid::regclass::text AS table, array_agg(a.attname ORDER BY k.ord) AS columns
            FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY k(attnum, ord), pg_attribute a
            WHERE c.contype = 'p' AND a.attrelid = c.conrelid AND a.attnum = k.attnum
              AND c.connamespace = $1::regnamespace GROUP BY 1""", s)}
        assert keys[f"{s}.documents"] == ["tenant", "document_id"] and keys[f"{s}.{t}"] == ["tenant", "chunk_id"]
        assert [r["document_id"] for r in await store.pool.fetch(f"SELECT document_id FROM {s}.documents")] == \
            ["outage"]
        assert await store.pool.fetchval(f"SELECT count(*) FROM {s}.{t} WHERE doc_type = 'report'") == 0
        counts = await store.pool.fetchrow(f"SELECT doc_count, chunk_count FROM {s}.indexes")
        assert tuple(counts) == (1, 1)
        # the BM25 statistics were counted from the rows the old table held
        assert await store.pool.fetchval(f"SELECT sum(chunks) FROM {s}.keyword_corpus") == 1
        # the old row is still found, as its tenant's; now another tenant may hold the same id beside it
        hits = (await Retriever(store, embedder, indexer).search("payment outage restored", Filters("default"))).hits
        assert hits[0].document_id == "outage"
        assert (await indexer.apply({"document_id": "outage", "content": GLOBEX_POLICY, "tenant": "globex"})
                ).status == "created"
        assert (await store.get_document("default", "outage"))["content"] == SHARED_OUTAGE
        assert await store.pool.fetchval(f"SELECT count(*) FROM {s}.schema_migrations") == \
            len(list(MIGRATIONS.glob("*.sql")))
    finally:
        await store.pool.execute(f"DROP SCHEMA {s} CASCADE")
        await store.close()
