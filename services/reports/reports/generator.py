"""One report, end to end: KPIs, anomalies and series from the store, context from rag, a grounded narrative, charts,
PDF; saved, published to reports.v1, then delivered. A report's text is never sent to rag's index: reports would
then ground later reports (and a tenant's report could surface in another's context)."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime

from prometheus_client import Histogram

from platform_common.kafka import Publisher
from platform_common.llm import LLM

from .charts import build_charts
from .config import ReportDefinition
from .delivery import deliver
from .grounding import NUMBER, Guard, figure_sources, passage_sources
from .kpis import anomaly_figures, bucket_for, compute_kpis, compute_series
from .narrative import write_narrative
from .pdf import render_pdf
from .rag_client import RagClient
from .settings import ReportsSettings
from .store import QUERY_VERSIONS, Scope, Store

log = logging.getLogger(__name__)

GENERATION_SECONDS = Histogram("reports_generation_duration_seconds", "Time to generate one report", ["definition"],
                               buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300))


def report_id(definition: ReportDefinition, start: datetime, end: datetime) -> str:
    """One id per definition and period, so a re-run (a restart, a retry) replaces rather than duplicates."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"report:{definition.tenant}/{definition.name}/"
                                              f"{start.isoformat()}/{end.isoformat()}"))


def segments(sentence: dict) -> list[dict]:
    """The sentence cut around its grounded numbers, each of which links to the figure (or passage) behind it."""
    parts, at = [], 0
    for m in NUMBER.finditer(sentence["text"]):
        ref = sentence["figures"].get(m.group())
        if ref and ref != "period":
            parts += [{"text": sentence["text"][at:m.start()]}, {"text": m.group(), "ref": ref}]
            at = m.end()
    return [p for p in parts + [{"text": sentence["text"][at:]}] if p["text"]]


def millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


class ReportGenerator:
    def __init__(self, settings: ReportsSettings, store: Store, llm: LLM, rag: RagClient,
                 publisher: Publisher | None = None):
        self.settings = settings
        self.store = store
        self.llm = llm
        self.rag = rag
        self.publisher = publisher

    async def generate(self, definition: ReportDefinition, period_end: datetime, *,
                       send: bool = True) -> tuple[dict, bytes, dict[str, str]]:
        started = time.perf_counter()
        end = period_end.astimezone(UTC)
        start = end - definition.length
        scope = Scope(definition.tenant, start, end,
                      None if "*" in definition.streams else definition.streams,
                      None if "*" in definition.metrics else definition.metrics)
        kpis = await compute_kpis(self.store, scope, definition)
        anomalies = await anomaly_figures(self.store, scope, 1)
        bucket = bucket_for(definition.length)
        charts = build_charts(await compute_series(self.store, scope, bucket), anomalies, kpis)
        passages, context = await self.rag.passages(definition.context_query or definition.title,
                                                          definition.tenant)
        names = [definition.name, definition.title, *(f.get(k) for f in kpis + anomalies
                                                       for k in ("stream", "source", "metric"))]
        guard = Guard(figure_sources(kpis + anomalies) + passage_sources(passages), names, (start, end))
        period = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
        narrative = await write_narrative(
            self.llm, guard, title=definition.title, period=period, figures=kpis, anomalies=anomalies,
            passages=passages, max_tokens=self.settings.reports_llm_max_tokens,
            max_rewrites=self.settings.reports_max_regenerations)
        rid = report_id(definition, start, end)
        report = {
            "report_id": rid, "definition": definition.name, "tenant": definition.tenant, "title": definition.title,
            "period_start": start.isoformat(), "period_end": end.isoformat(),
            "generated_at": datetime.now(UTC).isoformat(),
            "portal_url": f"{self.settings.reports_portal_url.rstrip('/')}/reports/{rid}",
            "kpis": kpis, "anomalies": anomalies, "charts": charts,
            "narrative": [{**s, "segments": segments(s)} for s in narrative.sentences],
            "removed": narrative.removed,
            "passages": [{**p, "text": p["text"][:1000]} for p in passages],
            "lineage": {"data_window": [start.isoformat(), end.isoformat()], "bucket": str(bucket),
                        "query_versions": QUERY_VERSIONS, "model": narrative.model,
                        "prompt_versions": narrative.prompt_versions,
                        "cited_chunks": [p["chunk_id"] for p in passages], **context},
        }
        pdf = await render_pdf(report)
        sha = hashlib.sha256(pdf).hexdigest()
        await self.store.save_report(report, pdf, sha)
        if self.publisher is not None:
            await self.publish(report, sha)
        GENERATION_SECONDS.labels(definition.name).observe(time.perf_counter() - started)
        log.info("report %s (%s, %s) generated in %.1fs", rid, definition.name, period, time.perf_counter() - started)
        outcomes = {}
        if send:
            outcomes = await deliver(
                report, pdf, email=definition.recipients.email,
                slack_url=self.settings.reports_slack_webhook_url if definition.recipients.slack else None,
                smtp_host=self.settings.reports_smtp_host, smtp_port=self.settings.reports_smtp_port,
                sender=self.settings.reports_smtp_sender)
        return report, pdf, outcomes

    async def publish(self, report: dict, sha: str) -> None:
        if self.publisher is None:
            raise RuntimeError("this generator was made without a publisher")
        lineage = report["lineage"]
        await self.publisher.publish(self.settings.reports_topic, report["definition"], {
            "report_id": report["report_id"], "definition": report["definition"], "tenant": report["tenant"],
            "period_start": millis(report["period_start"]), "period_end": millis(report["period_end"]),
            "title": report["title"], "portal_url": report["portal_url"], "pdf_sha256": sha,
            "model": lineage["model"], "prompt_version": ",".join(lineage["prompt_versions"]),
            "cited_chunks": lineage["cited_chunks"], "removed_sentences": len(report["removed"]),
            "query_versions": lineage["query_versions"], "anomalies": len(report["anomalies"]),
            "generated_at": millis(report["generated_at"])}, schema_of="reports.v1")
