"""The run table: each (definition, period, version) is claimed once, in one INSERT, then moves through
claimed -> generated -> published -> done, with one delivery row per channel. The report is stored in the same
transaction that marks the run generated, so a crash at any point leaves a run that a restart resumes at its step.

A run is driven by one replica at a time: taking it sets a lease (owner and expiry). A restarted replica keeps its
instance id, so it resumes its own runs at once; another replica takes them when the lease runs out.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from .config import ReportDefinition
from .store import Store

REASONS = ("scheduled", "backfill", "late", "manual")


@dataclass(frozen=True)
class Run:
    report_id: str
    tenant: str
    definition: str
    period_start: datetime
    period_end: datetime
    version: int
    reason: str
    state: str
    definition_sha256: str
    figures_sha256: str | None
    attempts: int
    publish_started_at: datetime | None
    published_partition: int | None
    published_offset: int | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Run:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


def report_id(definition: ReportDefinition, start: datetime, end: datetime, version: int) -> str:
    """One id per definition, period and version: a retry of a step finds the same report."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"report:{definition.tenant}/{definition.name}/"
                                              f"{start.isoformat()}/{end.isoformat()}/v{version}"))


def definition_sha256(definition: ReportDefinition) -> str:
    return hashlib.sha256(json.dumps(definition.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def figures_sha256(figures: list[dict]) -> str:
    """What a new version is made for: the figures' identities and values (not their wording)."""
    key = [(f["id"], f["kind"], f.get("stream"), f.get("metric"), f.get("source"), f["value"]) for f in figures]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()


def channels(definition: ReportDefinition, slack_configured: bool) -> list[str]:
    return [c for c, on in (("email", bool(definition.recipients.email)),
                            ("slack", definition.recipients.slack and slack_configured), ("portal", True)) if on]


class Runs:
    def __init__(self, store: Store, owner: str, lease: timedelta):
        self.pool, self.s = store.pool, store.s
        self.owner = owner
        self.lease = lease

    async def claim(self, definition: ReportDefinition, end: datetime, reason: str,
                    version: int | None = None) -> Run | None:
        """Claims version `version` of the period ending at `end` (None: the next version); None if it is taken."""
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}")
        start = end - definition.length
        for _ in range(3):  # two claims of "the next version" at once: one of them takes the one after
            number = version or 1 + (await self.pool.fetchval(
                f"""select coalesce(max(version), 0) from {self.s}.runs
                    where tenant = $1 and definition = $2 and period_start = $3 and period_end = $4""",
                definition.tenant, definition.name, start, end))
            row = await self.pool.fetchrow(
                f"""insert into {self.s}.runs (report_id, tenant, definition, period_start, period_end, version, reason,
                                               definition_sha256, lease_owner, lease_until)
                    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10::interval)
                    on conflict do nothing returning *""",
                report_id(definition, start, end, number), definition.tenant, definition.name, start, end, number,
                reason, definition_sha256(definition), self.owner, self.lease)
            if row is not None or version is not None:
                return Run.of(row) if row is not None else None
        return None

    async def first_seen(self, definition: ReportDefinition) -> datetime:
        """When this deployment first scheduled `definition` (now, the first time it is asked)."""
        await self.pool.execute(f"insert into {self.s}.schedules (tenant, definition) values ($1, $2) "
                                "on conflict do nothing", definition.tenant, definition.name)
        seen: datetime = await self.pool.fetchval(
            f"select first_seen from {self.s}.schedules where tenant = $1 and definition = $2",
            definition.tenant, definition.name)
        return seen

    async def latest(self, definition: ReportDefinition, end: datetime) -> Run | None:
        row = await self.pool.fetchrow(
            f"""select * from {self.s}.runs where tenant = $1 and definition = $2 and period_start = $3
                and period_end = $4 order by version desc limit 1""",
            definition.tenant, definition.name, end - definition.length, end)
        return Run.of(row) if row is not None else None

    async def take(self, report_id: str | None = None) -> list[Run]:
        """Open runs that are due and not leased by another replica (or only `report_id`), now leased to this one."""
        rows = await self.pool.fetch(
            f"""update {self.s}.runs set lease_owner = $1, lease_until = now() + $2::interval
                where state <> 'done' and ($3::text is null or report_id = $3)
                  and (next_attempt_at <= now() or $3::text is not null)
                  and (lease_owner is null or lease_owner = $1 or lease_until < now())
                returning *""", self.owner, self.lease, report_id)
        return sorted((Run.of(r) for r in rows), key=lambda r: (r.period_end, r.version))

    async def generated(self, run: Run, report: dict, pdf: bytes, pdf_sha256: str, figures: str,
                        channel_names: list[str]) -> None:
        """The report stored, its delivery rows made and the run marked generated: all or nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"""insert into {self.s}.reports (report_id, tenant, definition, title, period_start, period_end,
                                                  generated_at, content, pdf, pdf_sha256, version)
                    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
                run.report_id, run.tenant, run.definition, report["title"], run.period_start, run.period_end,
                datetime.fromisoformat(report["generated_at"]), report, pdf, pdf_sha256, run.version)
            await conn.executemany(
                f"insert into {self.s}.deliveries (report_id, channel) values ($1, $2)",
                [(run.report_id, c) for c in channel_names])
            await self._set(conn, run, "state = 'generated', figures_sha256 = $2, attempts = 0, error = null",
                            figures)

    async def publishing(self, run: Run) -> None:
        """Recorded before the send: a run found in this state after a crash may have been published already."""
        await self._set(self.pool, run, "publish_started_at = coalesce(publish_started_at, now())")

    async def published(self, run: Run, partition: int, offset: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._set(conn, run, "state = 'published', published_partition = $2, published_offset = $3, "
                                       "attempts = 0, error = null", partition, offset)
            await conn.execute(  # the portal lists a report once it is published
                f"""update {self.s}.deliveries set state = 'delivered', delivered_at = now(), attempts = attempts + 1
                    where report_id = $1 and channel = 'portal'""", run.report_id)

    async def pending_deliveries(self, run: Run) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""select channel, attempts from {self.s}.deliveries where report_id = $1 and state = 'pending'
                and next_attempt_at <= now() order by channel""", run.report_id)

    async def delivery_outcome(self, run: Run, channel: str, error: str | None, dead: bool,
                               retry_in: timedelta) -> None:
        state = "delivered" if error is None else "dead" if dead else "pending"
        await self.pool.execute(
            f"""update {self.s}.deliveries set state = $3, attempts = attempts + 1, error = $4,
                  delivered_at = case when $3 = 'delivered' then now() end, next_attempt_at = now() + $5::interval
                where report_id = $1 and channel = $2""", run.report_id, channel, state, error, retry_in)

    async def finish(self, run: Run) -> bool:
        """Marks the run done once no delivery is pending; False while some are (they are retried later)."""
        row = await self.pool.fetchrow(
            f"""update {self.s}.runs set state = 'done', lease_owner = null, updated_at = now()
                where report_id = $1 and not exists (select 1 from {self.s}.deliveries
                                                     where report_id = $1 and state = 'pending')
                returning report_id""", run.report_id)
        if row is None:
            await self._set(self.pool, run, "next_attempt_at = (select min(next_attempt_at) from "
                                            f"{self.s}.deliveries where report_id = $1 and state = 'pending')")
        return row is not None

    async def failed(self, run: Run, error: str, retry_in: timedelta) -> None:
        await self._set(self.pool, run, "attempts = attempts + 1, error = $2, next_attempt_at = now() + $3::interval",
                        error[:1000], retry_in)

    async def give_up(self, run: Run, error: str) -> None:
        """A run that failed every attempt: done, with its reason (and dead-lettered by the caller)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"""update {self.s}.deliveries set state = 'dead', error = $2
                                   where report_id = $1 and state = 'pending'""", run.report_id, error[:1000])
            await self._set(conn, run, "state = 'done', error = $2, lease_owner = null", error[:1000])

    async def deliveries(self, report_id: str) -> dict[str, str]:
        rows = await self.pool.fetch(f"select channel, state from {self.s}.deliveries where report_id = $1",
                                     report_id)
        return {r["channel"]: r["state"] for r in rows}

    async def _set(self, conn: asyncpg.Pool | asyncpg.Connection, run: Run, assignments: str, *args: object) -> None:
        await conn.execute(f"update {self.s}.runs set {assignments}, updated_at = now() where report_id = $1",
                           run.report_id, *args)
