"""Decides which periods to make, then drives the runs.

Every scheduled period that ended within the backfill horizon (and after the definition was first scheduled here)
is made once: after its end plus the grace, once the projections have caught up that far (`Watermark`). A period
missed while the service was down is made at the next start (reason `backfill`). A made period whose figures
change because of late events, within the lateness window, is made again as a new version (reason `late`). Claims
are atomic (`Runs.claim`), so restarts and replicas never make a version twice."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from .config import Config, ReportDefinition
from .generator import figures_of, scope_of
from .reporter import Reporter
from .runs import figures_sha256
from .settings import ReportsSettings

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, settings: ReportsSettings, config: Config, reporter: Reporter):
        self.config = config
        self.reporter = reporter
        self.grace = timedelta(seconds=settings.reports_grace_seconds)
        self.horizon = timedelta(hours=settings.reports_backfill_hours)
        self.lateness = timedelta(hours=settings.reports_lateness_hours)
        self.interval = settings.reports_schedule_interval_seconds

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Claims what is due, then advances every open run; returns the runs finished in this tick."""
        now = now or datetime.now(UTC)
        for definition in self.config.reports:
            try:
                since = max(now - self.horizon, await self.reporter.runs.first_seen(definition))
            except Exception:
                log.exception("report %s: schedule unavailable; retried at the next tick", definition.name)
                continue
            for end in definition.fire_times(since, now):
                try:  # PostgreSQL or Kafka may be down for a while: this tick is lost, not the service
                    await self.consider(definition, end, now)
                except Exception:
                    log.exception("report %s for the period ending %s: retried at the next tick", definition.name,
                                  end)
        return await self.reporter.drive()

    async def consider(self, definition: ReportDefinition, end: datetime, now: datetime) -> None:
        runs = self.reporter.runs
        latest = await runs.latest(definition, end)
        if latest is None:
            if now >= end + self.grace and await self.reporter.watermark.reached(end + self.grace):
                await runs.claim(definition, end, "scheduled" if end == definition.last_fire(now) else "backfill",
                                 version=1)
        elif latest.figures_sha256 is not None and now - end <= self.lateness:
            kpis, anomalies = await figures_of(self.reporter.store, scope_of(definition, end), definition)
            if figures_sha256(kpis + anomalies) != latest.figures_sha256:
                log.info("late events changed the figures of %s for the period ending %s: version %d follows",
                         definition.name, end.isoformat(), latest.version + 1)
                await runs.claim(definition, end, "late")

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)
