"""Runs each report definition at its cron times. The due period is the one that ends at the latest fire time; a
report already stored for it is not made again, so restarts and several replicas do not duplicate reports (a missed
period older than the latest is not back-filled)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from .config import Config
from .generator import ReportGenerator, report_id

log = logging.getLogger(__name__)


async def run_due(config: Config, generator: ReportGenerator, now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    made = []
    for definition in config.reports:
        end = definition.last_fire(now)
        try:  # PostgreSQL or a renderer may be down for a while: this tick is lost, not the service
            if await generator.store.has_report(report_id(definition, end - definition.length, end)):
                continue
            report, _, outcomes = await generator.generate(definition, end)
        except Exception:
            log.exception("report %s for the period ending %s failed; retried at the next tick", definition.name, end)
            continue
        made.append(report["report_id"])
        log.info("report %s delivery outcomes: %s", report["report_id"], outcomes)
    return made


async def schedule(config: Config, generator: ReportGenerator, interval: float) -> None:
    while True:
        await run_due(config, generator)
        await asyncio.sleep(interval)
