"""One report's content: KPIs, anomalies and series from the projections as of one moment, context from rag, a
narrative whose numbers code fills in, charts and PDF. Nothing is stored or sent here (see `reporter`). A report's
text is never sent to rag's index: reports would then ground later reports (and a tenant's report could surface in
another's context)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Histogram

from platform_common.llm import LLM

from .charts import build_charts
from .config import ReportDefinition
from .grounding import Guard
from .kpis import anomaly_figures, bucket_for, compute_kpis, compute_series
from .narrative import write_narrative
from .pdf import render_pdf
from .rag_client import RagClient
from .runs import Run, definition_sha256, figures_sha256
from .settings import ReportsSettings
from .store import QUERY_VERSIONS, Scope, Store

STAGE_SECONDS = Histogram("reports_generation_stage_duration_seconds", "Time of each stage of generating a report",
                          ["stage"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 60, 120))


@dataclass(frozen=True)
class Made:
    report: dict
    pdf: bytes
    pdf_sha256: str
    figures_sha256: str


def scope_of(definition: ReportDefinition, end: datetime, as_of: datetime | None = None) -> Scope:
    end = end.astimezone(UTC)
    return Scope(definition.tenant, end - definition.length, end,
                 None if "*" in definition.streams else definition.streams,
                 None if "*" in definition.metrics else definition.metrics, as_of)


async def figures_of(store: Store, scope: Scope, definition: ReportDefinition) -> tuple[list[dict], list[dict]]:
    kpis = await compute_kpis(store, scope, definition)
    return kpis, await anomaly_figures(store, scope, 1)


class Stages:
    """Wall time of each stage, for the report's lineage and the stage histogram."""
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._at = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._at, 4)
        STAGE_SECONDS.labels(stage).observe(now - self._at)
        self._at = now


class ReportGenerator:
    def __init__(self, settings: ReportsSettings, store: Store, llm: LLM, rag: RagClient):
        self.settings = settings
        self.store = store
        self.llm = llm
        self.rag = rag

    async def make(self, definition: ReportDefinition, run: Run, sources: dict) -> Made:
        """The report of `run`'s period, from the rows projected until now; `sources` (for the lineage) are the
        source offsets and the watermark it was made at."""
        stages = Stages()
        as_of = await self.store.now()
        scope = scope_of(definition, run.period_end, as_of)
        kpis, anomalies = await figures_of(self.store, scope, definition)
        bucket = bucket_for(definition.length)
        series = await compute_series(self.store, scope, bucket)
        stages.done("figures")
        passages, context = await self.rag.passages(definition.context_query or definition.title,
                                                    definition.tenant)
        stages.done("retrieval")
        period = f"{scope.start:%Y-%m-%d %H:%M} to {scope.end:%Y-%m-%d %H:%M} UTC"
        narrative = await write_narrative(
            self.llm, Guard(kpis + anomalies, (scope.start, scope.end)), title=definition.title, period=period,
            figures=kpis, anomalies=anomalies, passages=passages, max_tokens=self.settings.reports_llm_max_tokens,
            max_rewrites=self.settings.reports_max_regenerations)
        stages.done("narrative")
        charts = build_charts(series, anomalies, kpis)
        stages.done("charts")
        lineage = {"data_window": [scope.start.isoformat(), scope.end.isoformat()], "as_of": as_of.isoformat(),
                   "bucket": str(bucket), "query_versions": QUERY_VERSIONS,
                   "definition_sha256": definition_sha256(definition), "model": narrative.model,
                   "prompt_versions": narrative.prompt_versions, "cited_chunks": [p["chunk_id"] for p in passages],
                   **context, **sources}
        report = {
            "report_id": run.report_id, "version": run.version, "reason": run.reason,
            "definition": definition.name, "tenant": definition.tenant, "title": definition.title,
            "period_start": scope.start.isoformat(), "period_end": scope.end.isoformat(),
            "generated_at": datetime.now(UTC).isoformat(),
            "portal_url": f"{self.settings.reports_portal_url.rstrip('/')}/reports/{run.report_id}",
            "kpis": kpis, "anomalies": anomalies, "charts": charts,
            "narrative": narrative.sentences, "removed": narrative.removed,
            "passages": [{**p, "text": p["text"][:1000]} for p in passages],
            "lineage": lineage,
        }
        pdf = await render_pdf(report)
        stages.done("pdf")
        lineage["stage_seconds"] = stages.seconds
        return Made(report, pdf, hashlib.sha256(pdf).hexdigest(), figures_sha256(kpis + anomalies))
