"""Fixtures of the rag tests: a schema of their own in the real PostgreSQL, the real embedder (loaded once), and
an OpenAI-compatible stub for tests that are not about generation quality."""

import asyncio
import contextlib
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from platform_common.auth import KeyStore, make_key
from platform_common.testing import free_port
from rag.chunking import ChunkingConfig
from rag.embedder import Embedder
from rag.ingest import Indexer
from rag.settings import RagSettings
from rag.store import Store

DATA = Path(__file__).with_name("data")
_EMBEDDER = Embedder()  # loading takes seconds: one per test session


@pytest.fixture
def embedder() -> Embedder:
    return _EMBEDDER


@pytest.fixture
def retrieval_set() -> dict:
    return json.loads((DATA / "retrieval_set.json").read_text())


VOCABULARY = ("payment settlement card account loan mortgage deposit fraud breach outage complaint refund sanction "
              "screening custody crypto climate emission grid telecom subscriber patient record claim policy premium "
              "branch cash liquidity capital reporting audit vendor outsourcing resilience incident regulator "
              "deadline customer supplier invoice contract privacy consent marketing pricing disclosure").split()


@pytest.fixture
def background():
    """`background(count)`: domain-flavoured passages that answer none of the labelled questions (no names, codes
    or figures); their words are common to many passages, as in a real index."""
    def make(count: int) -> list[dict]:
        rng = random.Random(5)

        def sentence() -> str:
            w = rng.sample(VOCABULARY, 10)
            return (f"The {w[0]} {w[1]} team reviews {w[2]} and {w[3]} for {w[4]} cases, reporting {w[5]} "
                    f"{w[6]} issues to the {w[7]} owner before the {w[8]} {w[9]} review.")

        return [{"document_id": f"background-{i}", "title": f"Procedure {i}",
                 "content": " ".join(sentence() for _ in range(3))} for i in range(count)]
    return make


@pytest.fixture
async def rag_settings(run_id: str):
    settings = RagSettings(service_name="rag-tests", rag_db_schema=f"rag_test_{run_id}",
                           rag_documents_topic=f"documents.v1.t{run_id}",
                           rag_enriched_topic=f"events.enriched.v1.t{run_id}",
                           rag_contextualized_topic=f"events.contextualized.v1.t{run_id}", rag_group=f"rag-t{run_id}",
                           kafka_partitions=1)
    yield settings
    # the test's topics (and DLQs) go, so the shared broker does not fill up with them
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if run_id in t]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@pytest.fixture
async def store(rag_settings: RagSettings):
    store = await Store.connect(rag_settings.database_url, rag_settings.rag_db_schema)
    yield store
    await store.pool.execute(f"DROP SCHEMA {rag_settings.rag_db_schema} CASCADE")
    await store.close()


@pytest.fixture
async def indexer(store: Store, embedder: Embedder) -> Indexer:
    indexer = Indexer(store, embedder, ChunkingConfig(max_words=20, overlap_words=5))
    await indexer.open()
    return indexer


class StubChat:
    """An OpenAI-compatible chat endpoint answering `reply`, recording the requests it got."""

    def __init__(self, reply: str):
        self.reply = reply
        self.requests: list[dict] = []
        self.down = False  # answers 503, as an LLM server that is overloaded or restarting
        self.delay = 0.0  # seconds each answer takes
        self.in_flight = self.most_in_flight = 0
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def complete(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            if self.down:
                return JSONResponse({"error": "model unavailable"}, status_code=503)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(self.delay)
            self.in_flight -= 1
            return {"model": body["model"], "choices": [{"message": {"role": "assistant", "content": self.reply}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


@pytest.fixture
async def stub_chat():
    stub = StubChat("This is a payment service outage covered by the resilience rules. "
                    "About 4321 customers lost money.")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(stub.app, host="127.0.0.1", port=port, log_config=None))
    server.capture_signals = contextlib.nullcontext
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    stub.url = f"http://127.0.0.1:{port}/v1"
    yield stub
    server.should_exit = True
    await task


@pytest.fixture
def api_keys() -> SimpleNamespace:
    """Keys of two tenants (writers) and a reader of the first; `auth(name)` gives a request's headers."""
    tokens, entries = {}, []
    for name, tenant, roles in [("default", "default", ["write"]), ("acme", "acme", ["write"]),
                                ("acme_reader", "acme", ["read"]), ("globex", "globex", ["write"])]:
        tokens[name], entry = make_key(tenant, roles, key_id=name.replace("_", ""))
        entries.append(entry)
    return SimpleNamespace(store=KeyStore.from_entries(entries), tokens=tokens,
                           auth=lambda name: {"Authorization": f"Bearer {tokens[name]}"})
