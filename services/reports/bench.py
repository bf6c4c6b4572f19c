"""Time to generate one report (KPIs, series, charts, grounded narrative with the embedded SmolLM2, PDF) against the
running stack, on a seeded 24 h period in a scratch schema. Prints one markdown section.

    .venv/bin/python services/reports/bench.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from platform_common.llm import Message
from reports.config import ReportDefinition
from reports.generator import ReportGenerator
from reports.kpis import anomaly_figures, bucket_for, compute_kpis, compute_series
from reports.pdf import render_pdf
from reports.rag_client import RagClient
from reports.service import build_llm
from reports.settings import ReportsSettings
from reports.store import Scope, Store

RUNS = 2
END = datetime(2026, 11, 20, 12, tzinfo=UTC)
STREAMS = 6


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


async def main() -> None:
    settings = ReportsSettings(reports_db_schema=f"reports_bench_{uuid.uuid4().hex[:8]}",
                               reports_llm_backend="embedded")
    definition = ReportDefinition(name="bench", title="Daily operations", cron="0 12 * * *", period="24h")
    store = await Store.connect(settings.database_url, settings.reports_db_schema)
    llm, rag = build_llm(settings), RagClient(settings.reports_rag_url, keys={
        t: k.get_secret_value() for t, k in settings.reports_rag_api_keys.items()})
    try:
        events = await seed(store)
        started = time.perf_counter()
        await llm.load()
        load = time.perf_counter() - started
        # the first generation of a process is much slower (kernel warm-up): measured apart
        started = time.perf_counter()
        await llm.generate([Message("user", "Say hello.")], 8)
        warmup = time.perf_counter() - started
        generator = ReportGenerator(settings, store, llm, rag)  # no publisher: nothing goes to the shared topics
        totals, reports = [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            report, pdf, _ = await generator.generate(definition, END, send=False)
            totals.append(time.perf_counter() - started)
            reports.append((report, pdf))
        # the stages of one report, timed apart
        scope = Scope("default", END - definition.length, END)
        t0 = time.perf_counter()
        kpis = await compute_kpis(store, scope, definition)
        await anomaly_figures(store, scope, 1)
        await compute_series(store, scope, bucket_for(definition.length))
        t1 = time.perf_counter()
        await render_pdf(reports[0][0])
        t2 = time.perf_counter()
        report, pdf = reports[-1]
    finally:
        await store.drop()
        await store.close()
        await rag.aclose()
    narrative_seconds = statistics.median(totals) - (t1 - t0) - (t2 - t1)
    print("## reports\n")
    print(f"One 24 h report over {events} events on {STREAMS} streams ({len(kpis)} KPIs, 1 injected anomaly, "
          f"{len(report['charts'])} charts), embedded LLM `{report['lineage']['model']}` on CPU, {RUNS} runs.\n")
    print("| measure | value |\n|---|---|")
    print(f"| embedded LLM load (once per process) | {load:.1f} s |")
    print(f"| first generation of the process, 8 tokens (warm-up, once per process) | {warmup:.1f} s |")
    print(f"| report generation, median of {RUNS} (KPIs, series, rag, narrative + guardrail, charts, PDF, store) "
          f"| {statistics.median(totals):.2f} s |")
    print(f"| report generation, each run | {', '.join(f'{t:.2f} s' for t in totals)} |")
    print(f"| stage: KPIs + anomalies + series (PostgreSQL) | {t1 - t0:.2f} s |")
    print(f"| stage: charts (vl-convert PNG) + PDF (WeasyPrint) | {t2 - t1:.2f} s |")
    print(f"| stage: rest (rag + LLM narrative + guardrail rewrites + save), by difference | "
          f"{narrative_seconds:.2f} s |")
    guarded = ", ".join(f"{len(r['narrative'])} / {len(r['removed'])}" for r, _ in reports)
    print(f"| narrative sentences kept / removed by the guardrail, per run | {guarded} |")
    print(f"| PDF size | {len(pdf) / 1024:.0f} KiB |")
    print(f"| rag context | {report['lineage'].get('context_error') or str(len(report['passages'])) + ' passages'} |")
    print("\n`.venv/bin/python services/reports/bench.py`")


if __name__ == "__main__":
    asyncio.run(main())
