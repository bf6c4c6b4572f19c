"""Fixtures of the reports tests: settings with this run's own topics and database schema, a store on the real
PostgreSQL, HTTP servers on free ports (the portal, and stand-ins for the rag service and a chat-completions
endpoint), and a period with a known injected anomaly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI, Request

from platform_common.kafka import Publisher, ensure_topics
from platform_common.testing import free_port, serving
from reports.config import Config, Recipients, ReportDefinition, User
from reports.generator import ReportGenerator
from reports.rag_client import RagClient
from reports.reporter import Reporter
from reports.service import build_llm
from reports.settings import ReportsSettings
from reports.signin import hash_password
from reports.store import Store
from reports.watermark import Watermark

PERIOD_END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SPIKE_AT = PERIOD_END - timedelta(hours=5, minutes=30)
SPIKE = 97.5


async def delete_topics(settings: ReportsSettings, suffix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.endswith(suffix) or t.endswith(f"{suffix}.dlq")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@pytest.fixture
async def rsettings(run_id: str):
    """This test's own topics (deleted afterwards), consumer group and database schema."""
    settings = ReportsSettings(
        reports_db_schema=f"reports_t{run_id}",
        reports_raw_topic=f"events.raw.v1.t{run_id}", reports_enriched_topic=f"events.enriched.v1.t{run_id}",
        reports_anomalies_topic=f"anomalies.v1.t{run_id}", reports_topic=f"reports.v1.t{run_id}",
        reports_group=f"reports-t{run_id}",
        reports_llm_backend="openai", reports_llm_model="stub", reports_portal_url="http://portal.test",
        reports_max_regenerations=2)
    yield settings
    await delete_topics(settings, f".t{run_id}")


@pytest.fixture
async def store(rsettings: ReportsSettings):
    store = await Store.connect(rsettings.database_url, rsettings.reports_db_schema)
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


def event(stream: str, at: datetime, metrics: dict, source: str = "demo", tenant: str = "default") -> dict:
    return {"event_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "source": source, "type": "reading",
            "stream_id": stream, "tenant": tenant, "occurred_at": at, "received_at": at, "text": {},
            "metrics": metrics, "attributes": {}, "raw_payload": "{}"}


def anomaly(stream: str, metric: str, value: float, at: datetime, event_id: str, tenant: str = "default") -> dict:
    return {"alert_id": str(uuid.uuid4()), "dedup_key": f"{stream}:{metric}", "action": "trigger",
            "stream_id": stream, "source": "demo", "tenant": tenant, "metric": metric, "value": value,
            "score": 8.25, "threshold": 3.5, "severity": "critical", "window_start": at - timedelta(minutes=5),
            "window_end": at, "detector": "lstm-autoencoder", "model_version": "ae-3", "event_id": event_id,
            "traceparent": None, "attributes": {}, "created_at": at}


def period_events(tenant: str = "default") -> tuple[list[dict], dict]:
    """24 h of hourly readings on two streams, a spike of temperature on pump-7 with its anomaly alert."""
    start = PERIOD_END - timedelta(hours=24)
    events = []
    for h in range(24):
        at = start + timedelta(hours=h, minutes=10)
        events.append(event("pump-7", at, {"temperature": 40.0 + h % 3, "pressure": 2.0}, tenant=tenant))
        events.append(event("line-2", at, {"throughput": 120.0 + h}, source="github", tenant=tenant))
    spike = event("pump-7", SPIKE_AT, {"temperature": SPIKE, "pressure": 2.0}, tenant=tenant)
    events.append(spike)
    # outside the period: must count nowhere
    events.append(event("pump-7", PERIOD_END + timedelta(minutes=1), {"temperature": 500.0}, tenant=tenant))
    return events, anomaly("pump-7", "temperature", SPIKE, SPIKE_AT, spike["event_id"], tenant=tenant)


@pytest.fixture
async def period(store: Store) -> dict:
    """The known period, projected into the store; its anomaly alert is returned."""
    events, alert = period_events()
    for e in events:
        await store.upsert_event(e)
    await store.upsert_anomaly(alert)
    return alert


DEFINITION = ReportDefinition(name="daily-ops", title="Daily operations", tenant="default", cron="0 12 * * *",
                              period="24h", recipients={"email": ["ops@example.com"], "slack": True})
QUIET = DEFINITION.model_copy(update={"name": "daily-quiet", "recipients": Recipients()})


ALICE_HASH, MALLORY_HASH = hash_password("alice-pw"), hash_password("mallory-pw")  # argon2id: once per session
RAG_KEY = "pk_testkey_" + "k" * 32  # what the generator sends the rag stand-in for tenant "default"


@pytest.fixture
def config() -> Config:
    return Config(reports=[DEFINITION, QUIET], users=[
        User(username="alice", tenant="default", password_hash=ALICE_HASH),
        User(username="mallory", tenant="other", password_hash=MALLORY_HASH)])


def rag_app(passages: list[dict]) -> FastAPI:
    """Stands in for the rag service's query API, answering as it does (rag is not what these tests are about)."""
    app = FastAPI()
    app.state.queries = []

    app.state.authorizations = []

    @app.post("/v1/query")
    async def query(request: Request) -> dict:
        app.state.queries.append(await request.json())
        app.state.authorizations.append(request.headers.get("authorization"))
        return {"answer": "", "grounded": True, "model": "none", "prompt_version": "answer.v1@x",
                "index_version": "idx-test", "citations": passages}
    return app


def chat_app(draft: str, rewrite: str) -> FastAPI:
    """An OpenAI-compatible chat endpoint with canned answers: the draft for the narrative prompt, `rewrite` for
    each request to fix a sentence. Driven through the platform's real OpenAI client."""
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        app.state.requests.append(body)
        text = rewrite if "Rewrite it" in body["messages"][-1]["content"] else draft
        return {"model": "stub-inventor", "choices": [{"message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10}}
    return app


PASSAGES = [{"chunk_id": "strategy-1#0", "document_id": "strategy-1", "source_uri": "file:strategy.md",
             "title": "Operations strategy 2026",
             "text": "Our target is to keep pump temperature under 60 degrees and to reach 99.5% availability.",
             "score": 0.71}]


# figure ids of the known period: k1 all events, k8 mean and k9 highest temperature on pump-7, a1 the anomaly
DRAFT = ("The period saw {k1} events. The critical anomaly in temperature on pump-7 reached {a1}. "
         "Revenue grew by 9999 units compared to last week. Mean temperature on pump-7 was {k8}. "
         "Highest temperature on line-2 was {k9}. Fraud caused the outage.")
REWRITE = "Revenue rose by 4242 percent."


def reporter_of(rsettings: ReportsSettings, store: Store, llm, rag: RagClient, publisher: Publisher,
                config: Config, watermark: Watermark) -> Reporter:
    return Reporter(rsettings, config, store, ReportGenerator(rsettings, store, llm, rag), publisher, watermark)


async def make_report(reporter: Reporter, definition: ReportDefinition, end: datetime) -> tuple[dict, bytes]:
    """A manual run of `definition` for the period ending at `end`, driven to its end; the stored report."""
    report_id, _ = await reporter.run_now(definition, end)
    report, pdf, _ = await reporter.store.stored(report_id)
    return report, pdf


@pytest.fixture
async def reporter(rsettings, store, period, config):
    """A run driver over the known period, with the rag and chat stand-ins, publishing to this run's topics."""
    rag, chat = rag_app(PASSAGES), chat_app(DRAFT, REWRITE)
    async with serving(rag) as rag_url, serving(chat) as chat_url:
        rsettings.reports_rag_url = rag_url
        rsettings.reports_llm_url = f"{chat_url}/v1"
        await ensure_topics(rsettings, [rsettings.reports_topic])
        publisher = Publisher(rsettings)
        await publisher.start()
        sources = [rsettings.reports_raw_topic, rsettings.reports_enriched_topic, rsettings.reports_anomalies_topic]
        await ensure_topics(rsettings, sources)
        watermark = Watermark(rsettings, sources, rsettings.reports_group, publisher.producer.partitions_for)
        await watermark.start()
        llm, client = build_llm(rsettings), RagClient(rag_url, keys={"default": RAG_KEY})
        reporter = reporter_of(rsettings, store, llm, client, publisher, config, watermark)
        reporter.stubs = SimpleNamespace(rag=rag.state, chat=chat.state)
        try:
            yield reporter
        finally:
            await watermark.stop()
            await publisher.stop()
            await llm.aclose()
            await client.aclose()


@pytest.fixture
async def generated(reporter):
    """The report of the known period (no recipients), published to this run's reports topic."""
    report, pdf = await make_report(reporter, QUIET, PERIOD_END)
    return report, pdf, reporter.stubs.rag, reporter.stubs.chat


@pytest.fixture
def h() -> SimpleNamespace:
    """The helpers above, for test modules (with --import-mode=importlib they cannot import conftest)."""
    return SimpleNamespace(serving=serving, free_port=free_port, rag_app=rag_app, chat_app=chat_app, event=event,
                           anomaly=anomaly,
                           period_events=period_events, DEFINITION=DEFINITION, QUIET=QUIET, PASSAGES=PASSAGES,
                           make_report=make_report, reporter_of=reporter_of,
                           PERIOD_END=PERIOD_END, SPIKE=SPIKE, SPIKE_AT=SPIKE_AT, REWRITE=REWRITE, RAG_KEY=RAG_KEY)
