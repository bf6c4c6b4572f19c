"""notify's state in PostgreSQL: deliveries (the outbox the dispatcher drains), attempts, groups and silences.

A delivery row is one alert for one receiver; its unique key (tenant, dedup_key, action, receiver) is what makes
notify deduplicate, and its status is what keeps a restart from notifying twice. Silences belong to a tenant and
mute only that tenant's alerts. The tables come from the numbered files of `migrations/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from platform_common.migrations import migrate

from .routing import Match, Matcher

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

SILENCE_CACHE_SECONDS = 1.0
ATTEMPT_COLUMNS = ("notification_id", "alert_id", "dedup_key", "action", "receiver", "channel", "stream_id",
                   "outcome", "attempt", "status_code", "error", "silence_id", "at")


class _Connection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        # notify keeps no session state (no LISTEN, SET or session locks), so a connection going back to the
        # pool needs no reset query: one round trip less per use (asyncpg documents this override)
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Store:
    def __init__(self, dsn: str, schema: str):
        if not schema.isidentifier():
            raise ValueError(f"bad schema name {schema!r}")
        self.dsn = dsn
        self.s = schema
        self.pool: asyncpg.Pool | None = None
        self._silences: list[tuple[uuid.UUID, str, list[Matcher], datetime, datetime]] | None = None
        self._silences_read = 0.0
        self._lock_conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=8, init=_init_connection,
                                              connection_class=_Connection)
        async with self.pool.acquire() as conn:
            await migrate(conn, self.s, MIGRATIONS)

    @property
    def _db(self) -> asyncpg.Pool:
        """The pool, once start() has made it."""
        if self.pool is None:
            raise RuntimeError("the store is not started")
        return self.pool

    async def stop(self) -> None:
        if self._lock_conn:
            await self._lock_conn.close()
        if self.pool:
            await self.pool.close()

    async def lead(self, poll: float = 1.0) -> None:
        """Returns once this process holds the dispatch lock: of several notify processes on one schema (a
        rolling restart), only one sends. The session lock goes with the connection when the process dies."""
        self._lock_conn = await asyncpg.connect(self.dsn)
        while not await self._lock_conn.fetchval("select pg_try_advisory_lock(hashtext($1))",
                                                 f"notify-dispatch-{self.s}"):
            await asyncio.sleep(poll)

    # --- intake ---------------------------------------------------------------------------------------------

    async def add_deliveries(self, alert: dict, topic: str,
                             matches: Sequence[tuple[Match, str, str, uuid.UUID | None]]) -> list[dict]:
        """Stores one delivery per (match, channel, group_key, silence_id) and records the silenced and
        deduplicated outcomes; returns those attempt rows (to publish). A record that Kafka delivers again
        (same alert_id) adds nothing."""
        planned: list[dict[str, Any]] = [
            {"receiver": m.receiver, "channel": channel, "group_key": group_key, "group_wait": m.group_wait,
             "group_interval": m.group_interval, "silence_id": str(silence) if silence else None}
            for m, channel, group_key, silence in matches]
        recorded = []
        silenced = any(p["silence_id"] for p in planned)
        # A silenced delivery and its outcome are stored together; without a silence the insert is one statement
        # (intake speed is round trips), and a deduplicated outcome lost to a crash is found again on redelivery.
        async with self._db.acquire() as conn, conn.transaction() if silenced else contextlib.nullcontext():
            inserted = await conn.fetch(
                f"""insert into {self.s}.deliveries (alert_id, tenant, dedup_key, action, receiver, channel,
                      stream_id, group_key, group_wait, group_interval, source_topic, alert, status, silence_id,
                      finished_at)
                    select $1, $8, $2, $3, m.receiver, m.channel, $4, m.group_key, m.group_wait, m.group_interval,
                           $5, $6, case when m.silence_id is null then 'pending' else 'silenced' end, m.silence_id,
                           case when m.silence_id is not null then clock_timestamp() end
                      from jsonb_to_recordset($7::jsonb) as m(receiver text, channel text, group_key text,
                           group_wait float8, group_interval float8, silence_id uuid)
                    on conflict (tenant, dedup_key, action, receiver) do nothing returning id, receiver""",
                alert["alert_id"], alert["dedup_key"], alert["action"], alert["stream_id"], topic, alert, planned,
                alert["tenant"])
            ids = {r["receiver"]: r["id"] for r in inserted}
            for plan in planned:
                receiver, channel = plan["receiver"], plan["channel"]
                if receiver not in ids:
                    first = await conn.fetchrow(
                        f"select id, alert_id from {self.s}.deliveries where tenant = $4 and dedup_key = $1 "
                        f"and action = $2 and receiver = $3", alert["dedup_key"], alert["action"], receiver,
                        alert["tenant"])
                    if first["alert_id"] != alert["alert_id"]:  # a new alert for one already handled
                        recorded.append(await self._attempt(conn, first["id"], alert, receiver, channel,
                                                            "deduplicated", 0))
                elif plan["silence_id"]:
                    recorded.append(await self._attempt(conn, ids[receiver], alert, receiver, channel, "silenced",
                                                        0, silence_id=plan["silence_id"]))
        return recorded

    # --- dispatch -------------------------------------------------------------------------------------------

    async def due_groups(self) -> list[tuple[str, str]]:
        """(receiver, group_key) of pending deliveries whose group wait and group interval have passed."""
        rows = await self._db.fetch(f"""
            select d.receiver, d.group_key from {self.s}.deliveries d
              left join {self.s}.groups g using (receiver, group_key)
             where d.status = 'pending'
             group by d.receiver, d.group_key, g.last_sent_at
            having min(d.received_at) + make_interval(secs => max(d.group_wait)) <= clock_timestamp()
               and (g.last_sent_at is null
                    or g.last_sent_at + make_interval(secs => max(d.group_interval)) <= clock_timestamp())""")
        return [(r["receiver"], r["group_key"]) for r in rows]

    async def pending(self, receiver: str, group_key: str) -> list[asyncpg.Record]:
        return await self._db.fetch(
            f"select id, alert, channel, source_topic from {self.s}.deliveries where status = 'pending' "
            f"and receiver = $1 and group_key = $2 order by id", receiver, group_key)

    async def queue_depth(self) -> int:
        return await self._db.fetchval(f"select count(*) from {self.s}.deliveries where status = 'pending'")

    async def record_attempt(self, rows: list[asyncpg.Record], receiver: str, outcome: str, attempt: int,
                             status_code: int | None, error: str | None, group_key: str | None = None
                             ) -> list[dict]:
        """Records an attempt's outcome for each delivery in `rows`; `delivered` and `dead_lettered` also
        finish the deliveries (and mark the group as notified), in the same transaction."""
        async with self._db.acquire() as conn, conn.transaction():
            recorded = [await self._attempt(conn, r["id"], r["alert"], receiver, r["channel"], outcome, attempt,
                                            status_code, error) for r in rows]
            ids = [r["id"] for r in rows]
            if outcome in ("delivered", "dead_lettered"):
                await conn.execute(
                    f"update {self.s}.deliveries set status = $2, attempts = $3, last_error = $4, "
                    f"finished_at = clock_timestamp() where id = any($1)", ids, outcome, attempt, error)
                if group_key is not None:
                    await conn.execute(
                        f"insert into {self.s}.groups values ($1, $2, clock_timestamp()) on conflict "
                        f"(receiver, group_key) do update set last_sent_at = excluded.last_sent_at",
                        receiver, group_key)
            else:
                await conn.execute(f"update {self.s}.deliveries set attempts = $2, last_error = $3 "
                                   f"where id = any($1)", ids, attempt, error)
        return recorded

    async def _attempt(self, conn, delivery_id: int, alert: dict, receiver: str, channel: str, outcome: str,
                       attempt: int, status_code: int | None = None, error: str | None = None,
                       silence_id: str | None = None) -> dict:
        row = await conn.fetchrow(
            f"""insert into {self.s}.attempts (notification_id, delivery_id, alert_id, dedup_key, action, receiver,
                  channel, stream_id, outcome, attempt, status_code, error, silence_id, tenant)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                returning {", ".join(ATTEMPT_COLUMNS)}""",
            uuid.uuid4(), delivery_id, alert["alert_id"], alert["dedup_key"], alert["action"], receiver, channel,
            alert["stream_id"], outcome, attempt, status_code, error,
            uuid.UUID(str(silence_id)) if silence_id else None, alert.get("tenant"))
        return dict(row)

    async def unpublished(self, older_than: float, limit: int = 500) -> list[dict]:
        rows = await self._db.fetch(
            f"select {', '.join(ATTEMPT_COLUMNS)} from {self.s}.attempts where not published "
            f"and at < clock_timestamp() - make_interval(secs => $1) order by at limit $2", older_than, limit)
        return [dict(r) for r in rows]

    async def mark_published(self, ids: list[uuid.UUID]) -> None:
        await self._db.execute(f"update {self.s}.attempts set published = true where notification_id = any($1)", ids)

    # --- silences -------------------------------------------------------------------------------------------

    async def add_silence(self, tenant: str, matchers: list[Matcher], starts_at: datetime, ends_at: datetime,
                          created_by: str, comment: str) -> uuid.UUID:
        silence_id = uuid.uuid4()
        await self._db.execute(
            f"insert into {self.s}.silences (id, tenant, matchers, starts_at, ends_at, created_by, comment) "
            f"values ($1, $2, $3, $4, $5, $6, $7)", silence_id, tenant,
            [m.model_dump(by_alias=True) for m in matchers], starts_at, ends_at, created_by, comment)
        self._silences = None
        return silence_id

    async def silence_for(self, labels: dict[str, str]) -> uuid.UUID | None:
        """The first silence of the alert's tenant active now whose matchers all match `labels`. Silences are read
        at most once a second (this process's API changes apply at once; another process's within that second)."""
        if self._silences is None or time.monotonic() - self._silences_read > SILENCE_CACHE_SECONDS:
            rows = await self._db.fetch(f"select id, tenant, matchers, starts_at, ends_at from {self.s}.silences "
                                         f"where ends_at > clock_timestamp() and tenant is not null")
            self._silences = [(r["id"], r["tenant"], [Matcher(**m) for m in r["matchers"]], r["starts_at"],
                               r["ends_at"]) for r in rows]
            self._silences_read = time.monotonic()
        now = datetime.now(UTC)
        tenant = labels.get("tenant")
        return next((sid for sid, owner, matchers, starts, ends in self._silences
                     if owner == tenant and starts <= now < ends and all(m.matches(labels) for m in matchers)),
                    None)

    async def silences(self, tenant: str) -> list[asyncpg.Record]:
        return await self._db.fetch(f"select *, clock_timestamp() as now from {self.s}.silences where tenant = $1 "
                                     f"order by starts_at", tenant)

    async def silence(self, silence_id: uuid.UUID, tenant: str) -> asyncpg.Record | None:
        return await self._db.fetchrow(f"select *, clock_timestamp() as now from {self.s}.silences "
                                        f"where id = $1 and tenant = $2", silence_id, tenant)

    async def expire_silence(self, silence_id: uuid.UUID, tenant: str) -> bool:
        """Ends the tenant's silence now (a pending one ends before it starts); False if unknown, another
        tenant's or already expired."""
        status = await self._db.execute(
            f"update {self.s}.silences set ends_at = clock_timestamp(), "
            f"starts_at = least(starts_at, clock_timestamp()), updated_at = clock_timestamp() "
            f"where id = $1 and tenant = $2 and ends_at > clock_timestamp()", silence_id, tenant)
        self._silences = None
        return status == "UPDATE 1"
