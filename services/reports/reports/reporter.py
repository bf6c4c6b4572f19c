"""Drives report runs through their steps: generate (stored with the run's state, in one transaction), publish to
reports.v1 once, deliver once per channel. A failed step is retried with backoff; after the last attempt it is
dead-lettered to `<reports topic>.dlq` with its reason.

Publishing is made exactly-once by looking before sending again: a run that crashed after the send and before its
update scans reports.v1 from the time the send started. Email and Slack are taken by outside receivers: a receiver
that took a message in the instant before a crash gets it again (email carries the same Message-ID every time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TypeVar

from prometheus_client import Counter

from platform_common.kafka import Publisher, dead_letter

from .config import Config, ReportDefinition
from .delivery import deliver
from .generator import ReportGenerator
from .publication import find_published, published_record
from .runs import Run, Runs, channels
from .settings import ReportsSettings
from .store import Store
from .watermark import Watermark

log = logging.getLogger(__name__)

DELIVERIES = Counter("reports_deliveries_total", "Report deliveries by channel and outcome", ["channel", "outcome"])
STEPS = Counter("reports_run_steps_total", "Report run steps by step and outcome", ["step", "outcome"])
NEXT_STEP = {"claimed": "generate", "generated": "publish", "published": "deliver"}


T = TypeVar("T")


async def uninterrupted(step: Awaitable[T]) -> T:
    """Runs `step` to its end even when the caller is cancelled (a shutdown): a send and the record of it belong
    together, or a restart would send again."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class Reporter:
    def __init__(self, settings: ReportsSettings, config: Config, store: Store, generator: ReportGenerator,
                 publisher: Publisher, watermark: Watermark):
        self.settings = settings
        self.config = config
        self.store = store
        self.generator = generator
        self.publisher = publisher
        self.watermark = watermark
        self.runs = Runs(store, settings.reports_instance_id, timedelta(seconds=settings.reports_lease_seconds))

    def backoff(self, attempts: int) -> timedelta:
        s = self.settings
        return timedelta(seconds=min(s.reports_retry_base_seconds * 2 ** max(attempts - 1, 0),
                                     s.reports_retry_max_seconds))

    async def run_now(self, definition: ReportDefinition, end: datetime) -> tuple[str, dict[str, str]]:
        """A manual run: always a new version of the period (earlier versions stay as they are)."""
        run = await self.runs.claim(definition, end.astimezone(UTC), "manual")
        if run is None:
            raise RuntimeError(f"could not claim a new version of {definition.name} for {end.isoformat()}")
        await self.drive(run.report_id)
        return run.report_id, await self.runs.deliveries(run.report_id)

    async def drive(self, report_id: str | None = None) -> list[str]:
        """Advances every open run that is due (or only `report_id`); returns those that are done."""
        done = []
        for run in await self.runs.take(report_id):
            if await self.advance(run):
                done.append(run.report_id)
        return done

    async def advance(self, run: Run) -> bool:
        step = NEXT_STEP[run.state]
        try:
            definition = self.config.definition(run.definition)
            if run.state == "claimed":
                run = await self.generate(definition, run)
                STEPS.labels(step, "done").inc()
            step = NEXT_STEP[run.state]
            if run.state == "generated":
                run = await uninterrupted(self.publish(definition, run))
                STEPS.labels(step, "done").inc()
            step = NEXT_STEP[run.state]
            return await self.deliver(definition, run)
        except Exception as e:  # every failure of a step is retried, then dead-lettered: none stops the others
            STEPS.labels(step, "failed").inc()
            reason = f"{step}: {type(e).__name__}: {e}"
            if run.attempts + 1 >= self.settings.reports_max_attempts:
                log.error("report %s: %s; giving up after %d attempts", run.report_id, reason, run.attempts + 1)
                await self.dead_letter(run, None, e)
                await self.runs.give_up(run, reason)
            else:
                log.warning("report %s: %s; retried", run.report_id, reason, exc_info=True)
                await self.runs.failed(run, reason, self.backoff(run.attempts + 1))
            return False

    async def generate(self, definition: ReportDefinition, run: Run) -> Run:
        s = self.settings
        waited = None if run.reason == "manual" else run.period_end + timedelta(seconds=s.reports_grace_seconds)
        lineage = {"source_offsets": await self.watermark.offsets(),
                   "watermark": waited.isoformat() if waited else None}
        made = await self.generator.make(definition, run, lineage)
        await self.runs.generated(run, made.report, made.pdf, made.pdf_sha256, made.figures_sha256,
                                  channels(definition, bool(s.reports_slack_webhook_url)))
        log.info("report %s v%d (%s, period ending %s, %s) generated", run.report_id, run.version, run.definition,
                 run.period_end.isoformat(), run.reason)
        return replace(run, state="generated", attempts=0)

    async def publish(self, definition: ReportDefinition, run: Run) -> Run:
        topic = self.settings.reports_topic
        found = None
        if run.publish_started_at is not None:  # an earlier attempt may have sent it
            found = await find_published(self.settings, self.publisher.serde, self.publisher.producer.partitions_for,
                                         topic, run.report_id, run.publish_started_at)
        if found is None:
            report, _, sha = await self.store.stored(run.report_id)
            await self.runs.publishing(run)
            meta = await self.publisher.publish(topic, definition.name, published_record(report, sha),
                                                schema_of="reports.v1")
            found = (meta.partition, meta.offset)
        await self.runs.published(run, *found)
        return replace(run, state="published", attempts=0, published_partition=found[0], published_offset=found[1])

    async def deliver(self, definition: ReportDefinition, run: Run) -> bool:
        pending = await self.runs.pending_deliveries(run)
        if pending:
            report, pdf, _ = await self.store.stored(run.report_id)
        for row in pending:
            channel, attempts = row["channel"], row["attempts"] + 1
            try:
                await uninterrupted(self.delivered(run, channel, report, pdf, definition))
            except Exception as e:  # one channel down must not hold up the others
                dead = attempts >= self.settings.reports_max_attempts
                reason = f"{channel} delivery: {type(e).__name__}: {e}"
                log.warning("report %s: %s (attempt %d)", run.report_id, reason, attempts)
                await self.runs.delivery_outcome(run, channel, reason[:1000], dead, self.backoff(attempts))
                DELIVERIES.labels(channel, "dead" if dead else "failed").inc()
                if dead:
                    await self.dead_letter(run, channel, e)
        return await self.runs.finish(run)

    async def delivered(self, run: Run, channel: str, report: dict, pdf: bytes, definition: ReportDefinition) -> None:
        await deliver(channel, report, pdf, definition, self.settings)
        await self.runs.delivery_outcome(run, channel, None, False, timedelta())
        DELIVERIES.labels(channel, "delivered").inc()

    async def dead_letter(self, run: Run, channel: str | None, error: Exception) -> None:
        """The run's reports.v1 record (if it was published) to the DLQ, with what failed."""
        value = None
        if run.published_offset is not None:
            report, _, sha = await self.store.stored(run.report_id)
            value = await self.publisher.serde.encode(self.settings.reports_topic, published_record(report, sha),
                                                      "reports.v1")
        record = SimpleNamespace(
            topic=self.settings.reports_topic,
            partition=run.published_partition if run.published_partition is not None else -1,
            offset=run.published_offset if run.published_offset is not None else -1, key=run.definition,
            value=value, headers=[("reports.report_id", run.report_id.encode()),
                                  ("reports.channel", (channel or "-").encode()),
                                  ("reports.period_end", run.period_end.isoformat().encode())])
        await dead_letter(self.publisher, record, error, self.settings.reports_group)
