"""rag and reports together, as their services wire them, on the real stack (PostgreSQL, Redis, Kafka, the schema
registry; schemas and topics of this run's own). The LLM is an OpenAI-compatible stand-in where the tests are about
who sees what, not about text quality:

- a tenant's report cites its own and the shared reference documents, never another tenant's, and reports are not
  indexed back into rag;
- schemathesis fuzzes both OpenAPI schemas with valid credentials (a bearer key and a portal session): no 5xx;

and the embedded model (SmolLM2 on llama.cpp, as reports runs it by default) where the test is the real path: a
report grounded by the real rag service, written by the real model, every kept sentence passing the guardrail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request

from platform_common.auth import KeyStore, make_key
from platform_common.kafka import Publisher, ensure_topics
from platform_common.testing import drop_topics, serving


def chat_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        return {"model": body["model"], "choices": [{"message": {"role": "assistant",
                                                                 "content": "Operations were steady."}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    return app


async def make_report(reporter, definition) -> dict:
    """A manual run of `definition` for the period ending at PERIOD_END; the stored report."""
    reporter.config.reports.append(definition)
    report_id, _ = await reporter.run_now(definition, PERIOD_END)
    return (await reporter.store.stored(report_id))[0]


@pytest.fixture
async def stack(run_id, request):
    """rag (service + API on a port) and reports (store, generator with per-tenant rag keys); keys by name.
    Reports' LLM is the stand-in, or the embedded model when the test asks for "embedded"."""
    from rag.embedder import Embedder
    from rag.service import RagService
    from rag.settings import RagSettings
    from reports.config import Config
    from reports.generator import ReportGenerator
    from reports.rag_client import RagClient
    from reports.reporter import Reporter
    from reports.service import build_llm
    from reports.settings import ReportsSettings
    from reports.store import Store as ReportsStore
    from reports.watermark import Watermark

    keys, entries = {}, []
    for name, tenant, roles in [("acme_writer", "acme", ["write"]), ("globex_writer", "globex", ["write"]),
                                ("acme_reports", "acme", ["read"]), ("globex_reports", "globex", ["read"])]:
        keys[name], entry = make_key(tenant, roles, key_id=name.replace("_", ""))
        entries.append(entry)
    key_store = KeyStore.from_entries(entries)
    async with serving(chat_app()) as chat:
        rag_settings = RagSettings(service_name="rag-sec", rag_db_schema=f"rag_sec_{run_id}",
                                   rag_documents_topic=f"documents.v1.sec{run_id}",
                                   rag_enriched_topic=f"events.enriched.v1.sec{run_id}",
                                   rag_contextualized_topic=f"events.contextualized.v1.sec{run_id}",
                                   rag_group=f"rag-sec{run_id}", rag_llm_backend="openai",
                                   rag_llm_url=f"{chat}/v1", rag_llm_model="stub", kafka_partitions=1)
        rag = RagService(rag_settings, embedder=Embedder())
        await rag.start(consume=False)
        from rag.api import create_app as rag_app
        rsettings = ReportsSettings(reports_db_schema=f"reports_sec{run_id}", reports_topic=f"reports.v1.sec{run_id}",
                                    reports_group=f"reports-sec{run_id}", reports_portal_url="http://portal.test",
                                    **({"reports_llm_backend": "embedded"} if getattr(request, "param", None) ==
                                       "embedded" else {"reports_llm_backend": "openai",
                                                        "reports_llm_url": f"{chat}/v1", "reports_llm_model": "stub"}))
        store = await ReportsStore.connect(rsettings.database_url, rsettings.reports_db_schema)
        await ensure_topics(rsettings, [rsettings.reports_topic, rsettings.reports_raw_topic])
        publisher = Publisher(rsettings)
        await publisher.start()
        watermark = Watermark(rsettings, [rsettings.reports_raw_topic], rsettings.reports_group,
                              publisher.producer.partitions_for)
        await watermark.start()
        llm = build_llm(rsettings)
        try:
            async with serving(rag_app(rag, key_store)) as rag_url:
                client = RagClient(rag_url, keys={"acme": keys["acme_reports"], "globex": keys["globex_reports"]})
                # the tests add their definitions to the config
                reporter = Reporter(rsettings, Config(), store, ReportGenerator(rsettings, store, llm, client),
                                    publisher, watermark)
                try:
                    yield SimpleNamespace(rag=rag, rag_url=rag_url, keys=keys, key_store=key_store, store=store,
                                          reporter=reporter, rsettings=rsettings, rag_settings=rag_settings)
                finally:
                    await client.aclose()
        finally:
            await llm.aclose()
            await watermark.stop()
            await publisher.stop()
            await store.drop()
            await store.close()
            await rag.store.pool.execute(f"DROP SCHEMA {rag_settings.rag_db_schema} CASCADE")
            await rag.stop()
            await asyncio.to_thread(drop_topics, rsettings, [rsettings.reports_topic, rag_settings.rag_documents_topic,
                                                             rag_settings.rag_enriched_topic,
                                                             rag_settings.rag_contextualized_topic])


PERIOD_END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ACME_PLAN = ("Acme maintenance strategy: pump temperature must stay below 61 degrees; the acme-secret-plan pays "
             "the Zurich crew a bonus when availability reaches 99.1%.")
GLOBEX_PLAN = "Globex maintenance strategy: pump temperature must stay below 75 degrees on every line."
SHARED_RULE = "Maintenance rule for every operator: a pump running hot is inspected within one day."


def readings(tenant: str) -> list[dict]:
    start = PERIOD_END - timedelta(hours=24)
    return [{"event_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "source": "demo", "type": "reading",
             "stream_id": "pump-1", "tenant": tenant, "occurred_at": start + timedelta(hours=h),
             "received_at": start + timedelta(hours=h), "text": {}, "metrics": {"temperature": 40.0 + h % 3},
             "attributes": {}, "raw_payload": "{}"} for h in range(24)]


async def test_a_report_cites_its_own_tenants_and_the_shared_documents_only(stack):
    import httpx

    from reports.config import ReportDefinition

    async with httpx.AsyncClient(base_url=stack.rag_url) as http:
        for writer, doc_id, text in (("acme_writer", "strategy", ACME_PLAN),
                                     ("globex_writer", "strategy", GLOBEX_PLAN)):
            answer = await http.post("/v1/documents", json={"document_id": doc_id, "title": "Maintenance strategy",
                                                            "content": text, "doc_type": "strategy"},
                                     headers={"Authorization": f"Bearer {stack.keys[writer]}"})
            assert answer.status_code == 200, answer.text
    # shared reference documents arrive as documents.v1 does (the same code path as its consumer)
    await stack.rag.indexer.apply({"document_id": "rule", "title": "Maintenance rule", "content": SHARED_RULE,
                                   "tenant": "_shared", "metadata": {"shared": "true"}})
    for tenant in ("acme", "globex"):
        for e in readings(tenant):
            await stack.store.upsert_event(e)

    reports = {}
    for tenant in ("acme", "globex"):
        definition = ReportDefinition(name=f"{tenant}-daily", title=f"{tenant} daily", tenant=tenant,
                                      cron="0 12 * * *", period="24h", context_query="maintenance strategy pump "
                                      "temperature target availability bonus")
        reports[tenant] = await make_report(stack.reporter, definition)

    def cited(report: dict) -> set[tuple[str, str]]:
        return {(p["document_id"], p["text"]) for p in report["passages"]}
    acme, globex = cited(reports["acme"]), cited(reports["globex"])
    assert ("strategy", ACME_PLAN) in acme and ("rule", SHARED_RULE) in acme  # the controls: context is there
    assert ("strategy", GLOBEX_PLAN) in globex and ("rule", SHARED_RULE) in globex
    assert ("strategy", GLOBEX_PLAN) not in acme
    assert ("strategy", ACME_PLAN) not in globex
    assert "acme-secret-plan" not in str(reports["globex"]) and "75 degrees" not in str(reports["acme"])
    # and no report became a document of rag's index, for any tenant
    assert not await stack.rag.store.pool.fetchval(
        f"SELECT count(*) FROM {stack.rag_settings.rag_db_schema}.documents WHERE doc_type = 'report' "
        "OR starts_with(document_id, 'report-')")


@pytest.mark.skipif(not shutil.which("schemathesis", path=str(Path(sys.executable).parent)),
                    reason="schemathesis is not installed (test extras)")
async def test_fuzzing_both_apis_with_valid_credentials_finds_no_server_error(stack, tmp_path):
    import httpx

    from reports.config import Config, ReportDefinition, User
    from reports.portal import SESSION_COOKIE
    from reports.portal import create_app as reports_app
    from reports.signin import hash_password

    for e in readings("acme"):
        await stack.store.upsert_event(e)
    definition = ReportDefinition(name="acme-daily", title="Acme daily", tenant="acme", cron="0 12 * * *",
                                  period="24h")
    await make_report(stack.reporter, definition)  # a report for the fuzzer to find
    config = Config(reports=[definition], users=[User(username="ann", tenant="acme",
                                                      password_hash=hash_password("ann-pw"))])
    portal = reports_app(config, stack.store, stack.reporter, {}, stack.rsettings, stack.key_store)
    async with serving(portal) as reports_url:
        async with httpx.AsyncClient(base_url=reports_url) as http:
            signed_in = await http.post("/login", data={"username": "ann", "password": "ann-pw"},
                                        headers={"Origin": reports_url})
            session = signed_in.cookies[SESSION_COOKIE]
        runs = {"rag": (stack.rag_url, [f"Authorization: Bearer {stack.keys['acme_writer']}"]),
                # the portal's own Origin too, so that the forms get past the CSRF check to their handlers
                "reports": (reports_url, [f"Authorization: Bearer {stack.keys['acme_writer']}",
                                          f"Cookie: {SESSION_COOKIE}={session}", f"Origin: {reports_url}"])}
        for name, (base, headers) in runs.items():
            # /readyz is left out: its 503 is the documented answer of a dependency down, not a server error
            command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json",
                       "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "7",
                       "--exclude-path-regex", "^/readyz$", *(a for h in headers for a in ("-H", h))]
            proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
                                                        env={**os.environ, "NO_COLOR": "1"})
            out, _ = await proc.communicate()
            text = out.decode(errors="replace")
            print(f"\nschemathesis {name}:\n" + "\n".join(text.splitlines()[-12:]))
            assert proc.returncode == 0, text[-4000:]


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_the_real_path_rag_grounds_and_the_embedded_model_writes_a_guarded_report(stack):
    import httpx

    from reports.config import ReportDefinition
    from reports.grounding import REF, Guard

    async with httpx.AsyncClient(base_url=stack.rag_url) as http:
        answer = await http.post("/v1/documents", json={"document_id": "strategy", "title": "Maintenance strategy",
                                                        "content": ACME_PLAN, "doc_type": "strategy"},
                                 headers={"Authorization": f"Bearer {stack.keys['acme_writer']}"})
        assert answer.status_code == 200, answer.text
    for e in readings("acme"):
        await stack.store.upsert_event(e)
    definition = ReportDefinition(name="acme-daily", title="Acme daily operations", tenant="acme", cron="0 12 * * *",
                                  period="24h", context_query="maintenance strategy pump temperature")
    report = await make_report(stack.reporter, definition)

    lineage = report["lineage"]
    assert lineage["model"].lower().startswith("smollm2") and "context_error" not in lineage
    assert lineage["index_version"] and [p["document_id"] for p in report["passages"]][:1] == ["strategy"]
    assert set(lineage["stage_seconds"]) == {"figures", "retrieval", "narrative", "charts", "pdf"}
    # the model wrote something, and whatever was kept passes the guard again, independently of what was recorded
    assert report["narrative"] or report["removed"]
    guard = Guard(report["kpis"] + report["anomalies"], (datetime.fromisoformat(report["period_start"]),
                                                          datetime.fromisoformat(report["period_end"])))
    for sentence in report["narrative"]:
        assert guard.check(sentence["draft"]).text == sentence["text"]
        assert not REF.search(sentence["text"])  # every reference was filled in
    assert all(r["problems"] for r in report["removed"])
