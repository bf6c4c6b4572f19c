"""Report generation with rag up, stage by stage, and the narrative guardrail's precision and recall on its labelled
set. Prints one markdown section.

The real rag service runs in this process with its HTTP API on a port (its own scratch schema on the running
PostgreSQL, the real embedder), holding three reference documents of the tenant; reports asks it over HTTP with a
tenant key, as the service does. Reports are made by the run driver (a manual run each: generate, publish to a
scratch topic) over a seeded 24 h period, with the embedded SmolLM2 on llama.cpp (the default runtime), RUNS times.

    .venv/bin/python services/reports/bench.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml

from platform_common.auth import KeyStore, make_key
from platform_common.kafka import Publisher, ensure_topics
from platform_common.llm import InProcessLLM, Message
from platform_common.testing import drop_topics, serving
from rag.api import create_app as rag_app
from rag.embedder import Embedder
from rag.service import RagService
from rag.settings import RagSettings
from reports.config import Config, ReportDefinition
from reports.generator import ReportGenerator
from reports.grounding import Guard
from reports.rag_client import RagClient
from reports.reporter import Reporter
from reports.service import build_llm
from reports.settings import ReportsSettings
from reports.store import Store
from reports.watermark import Watermark

RUNS = 3
END = datetime(2026, 11, 20, 12, tzinfo=UTC)
STREAMS = 6
STAGES = ("figures", "retrieval", "narrative", "charts", "pdf")
GUARD_SET = Path(__file__).parent / "tests" / "data" / "guardrail_set.yaml"
DOCUMENTS = [("strategy", "Maintenance strategy", "Pump temperature must stay below 60 degrees; a pump over it is "
              "inspected within one day. Availability target: 99.5% per month."),
             ("runbook", "Overheating runbook", "When a pump's temperature spikes, check the cooling loop, then the "
              "load; escalate to the on-call engineer if it does not fall within an hour."),
             ("sla", "Service levels", "Operations reports are sent every day at noon; anomalies are paged at once.")]


async def seed(store: Store) -> int:
    start, n = END - timedelta(hours=24), 0
    for s in range(STREAMS):
        for minute in range(0, 24 * 60, 5):
            value = 40.0 + (minute // 5) % 7 + (60.0 if (s, minute) == (3, 600) else 0.0)
            at = start + timedelta(minutes=minute)
            await store.upsert_event({"event_id": f"bench-{s}-{minute}", "source": ("demo", "github")[s % 2],
                                      "type": "reading", "stream_id": f"pump-{s}", "tenant": "default",
                                      "occurred_at": at, "metrics": {"temperature": value, "load": s + 0.5},
                                      "attributes": {}})
            n += 1
    await store.upsert_anomaly({
        "alert_id": "bench-alert", "dedup_key": "pump-3:temperature", "action": "trigger", "stream_id": "pump-3",
        "source": "github", "tenant": "default", "metric": "temperature", "value": 101.0, "score": 9.1,
        "threshold": 3.5, "severity": "critical", "window_start": start + timedelta(minutes=595),
        "window_end": start + timedelta(minutes=600), "detector": "lstm-autoencoder", "model_version": "bench",
        "event_id": "bench-3-600", "created_at": start + timedelta(minutes=600)})
    return n


def guard_scores() -> tuple[float, float, int, int]:
    """Precision and recall of the guard at flagging wrong sentences of the labelled set, and its size."""
    data = yaml.safe_load(GUARD_SET.read_text())
    guard = Guard(data["figures"], tuple(datetime.fromisoformat(t) for t in data["period"]))  # type: ignore[arg-type]
    flagged = [(not guard.check(s["text"]).ok, s["label"] != "ok") for s in data["sentences"]]
    tp = sum(f and w for f, w in flagged)
    fp = sum(f and not w for f, w in flagged)
    wrong = sum(w for _, w in flagged)
    return tp / max(tp + fp, 1), tp / max(wrong, 1), wrong, len(flagged) - wrong


@contextlib.asynccontextmanager
async def rag_up(run: str) -> AsyncIterator[tuple[str, str]]:
    """The rag service with its API on a port, holding DOCUMENTS; yields its URL and a read key of the tenant."""
    settings = RagSettings(service_name="rag-bench", rag_db_schema=f"rag_rbench_{run}",
                           rag_documents_topic=f"documents.v1.rbench{run}",
                           rag_enriched_topic=f"events.enriched.v1.rbench{run}",
                           rag_contextualized_topic=f"events.contextualized.v1.rbench{run}", rag_group=f"rbench{run}")
    (writer, w), (reader, r) = make_key("default", ["write"]), make_key("default", ["read"])
    rag = RagService(settings, embedder=Embedder())
    await rag.start(consume=False)
    try:
        async with serving(rag_app(rag, KeyStore.from_entries([w, r]))) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                for doc_id, title, text in DOCUMENTS:
                    (await http.post("/v1/documents", json={"document_id": doc_id, "title": title, "content": text},
                                     headers={"Authorization": f"Bearer {writer}"})).raise_for_status()
            yield url, reader
    finally:
        await rag.store.pool.execute(f"DROP SCHEMA {settings.rag_db_schema} CASCADE")
        await rag.stop()
        await asyncio.to_thread(drop_topics, settings, [settings.rag_documents_topic, settings.rag_enriched_topic,
                                                        settings.rag_contextualized_topic])


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    run = uuid.uuid4().hex[:8]
    settings = ReportsSettings(reports_db_schema=f"reports_bench_{run}", reports_topic=f"reports.v1.bench{run}",
                               reports_group=f"reports-bench{run}", reports_llm_backend="embedded")
    definition = ReportDefinition(name="bench", title="Daily operations", cron="0 12 * * *", period="24h",
                                  context_query="pump temperature maintenance")
    store = await Store.connect(settings.database_url, settings.reports_db_schema)
    await ensure_topics(settings, [settings.reports_topic])
    publisher = Publisher(settings)
    await publisher.start()
    watermark = Watermark(settings, [settings.reports_raw_topic], settings.reports_group,
                          publisher.producer.partitions_for)
    await watermark.start()
    llm = build_llm(settings)
    try:
        events = await seed(store)
        started = time.perf_counter()
        if isinstance(llm, InProcessLLM):
            await llm.load()
        load = time.perf_counter() - started
        started = time.perf_counter()
        await llm.generate([Message("user", "Say hello.")], 8)  # the first generation of a process warms kernels
        warmup = time.perf_counter() - started
        async with rag_up(run) as (rag_url, key):
            rag = RagClient(rag_url, keys={"default": key})
            reporter = Reporter(settings, Config(reports=[definition]), store,
                                ReportGenerator(settings, store, llm, rag), publisher, watermark)
            totals, reports = [], []
            for i in range(RUNS):
                print(f"reports bench: report {i + 1}/{RUNS}", file=sys.stderr, flush=True)
                started = time.perf_counter()
                report_id, _ = await reporter.run_now(definition, END)
                totals.append(time.perf_counter() - started)
                reports.append((await store.stored(report_id))[:2])
            await rag.aclose()
    finally:
        await llm.aclose()
        await watermark.stop()
        await publisher.stop()
        await store.drop()
        await store.close()
        await asyncio.to_thread(drop_topics, settings, [settings.reports_topic])
    stage = {s: statistics.median(r["lineage"]["stage_seconds"][s] for r, _ in reports) for s in STAGES}
    report, pdf = reports[-1]
    precision, recall, wrong, right = guard_scores()
    print("## reports\n")
    print(f"One 24 h report over {events} events on {STREAMS} streams ({len(report['kpis'])} KPIs, 1 injected "
          f"anomaly, {len(report['charts'])} charts), made by the run driver (generate, store, publish), with the "
          f"real rag service up (in process, HTTP API, {len(DOCUMENTS)} reference documents, real embedder) and the "
          f"embedded LLM `{report['lineage']['model']}` on llama.cpp, CPU; median of {RUNS} runs.\n")
    print("| measure | value |\n|---|---|")
    print(f"| embedded LLM load (once per process) | {load:.1f} s |")
    print(f"| first generation of the process, 8 tokens (warm-up, once per process) | {warmup:.1f} s |")
    print(f"| report run, generate + store + publish, median | {statistics.median(totals):.2f} s |")
    print(f"| report run, each | {', '.join(f'{t:.2f} s' for t in totals)} |")
    for name, what in (("figures", "KPIs, anomalies, series (PostgreSQL)"), ("retrieval", "rag over HTTP"),
                       ("narrative", "LLM + guardrail + rewrites"), ("charts", "Vega-Lite specs"),
                       ("pdf", "charts to PNG + PDF (WeasyPrint)")):
        print(f"| stage: {name}, {what}, median | {stage[name]:.3f} s |")
    kept = ", ".join(f"{len(r['narrative'])} / {len(r['removed'])}" for r, _ in reports)
    print(f"| narrative sentences kept / removed by the guardrail, per run | {kept} |")
    print(f"| rag context | {report['lineage'].get('context_error') or str(len(report['passages'])) + ' passages'} |")
    print(f"| PDF size | {len(pdf) / 1024:.0f} KiB |")
    print(f"\nNarrative guardrail on its labelled set (`services/reports/tests/data/guardrail_set.yaml`: {wrong} wrong "
          f"sentences — swapped values, wrong units, wrong streams, numbers of the model's own, claims without a "
          f"figure — and {right} correct ones), a removal counted as a positive: precision {precision:.3f}, "
          f"recall {recall:.3f}.")
    print("\n`.venv/bin/python services/reports/bench.py`")


if __name__ == "__main__":
    asyncio.run(main())
