"""The analytical store in PostgreSQL: projections of the event topics, the KPI and time-series queries over them,
and the generated reports.

Projections are upserts keyed on the tenant and the event's (or alert's) id, so replaying a topic rebuilds the same
rows, an enriched event arriving before or after its raw copy ends in the same row, and no tenant's event can
overwrite another tenant's row. Tables are made and upgraded by the numbered SQL migrations in `migrations/`. Every
query that feeds a report has a version (QUERY_VERSIONS), recorded in the report's lineage.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from platform_common.migrations import migrate

QUERY_VERSIONS = {"kpis": "kpis@1", "series": "series@1", "anomalies": "anomalies@1", "rows": "rows@1"}

MIGRATIONS = Path(__file__).with_name("migrations")

_BASE = ("event_id", "tenant", "source", "type", "stream_id", "occurred_at", "metrics", "attributes")


def _ts(millis: int | datetime) -> datetime:
    # python-schema-registry-client already turns timestamp-millis into aware datetimes; tolerate raw millis too
    if isinstance(millis, datetime):
        return millis if millis.tzinfo else millis.replace(tzinfo=UTC)
    return datetime.fromtimestamp(millis / 1000, UTC)


@dataclass(frozen=True)
class Scope:
    """What a report looks at: one tenant, a half-open time window, some streams and metrics (None: all)."""
    tenant: str
    start: datetime
    end: datetime
    streams: list[str] | None = None
    metrics: list[str] | None = None
    # rows projected (and enrichment applied) after this moment are not seen: a report's figures and its
    # drill-down read the same rows, however many late events arrived since
    as_of: datetime | None = None


class Store:
    def __init__(self, pool: asyncpg.Pool, schema: str):
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"bad schema name {schema!r}")
        self.pool = pool
        self.s = schema

    @classmethod
    async def connect(cls, dsn: str, schema: str) -> Store:
        async def init(conn: asyncpg.Connection) -> None:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=init)
        store = cls(pool, schema)
        await store.create()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def create(self) -> None:
        async with self.pool.acquire() as conn:
            await migrate(conn, self.s, MIGRATIONS)

    async def drop(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(f"drop schema if exists {self.s} cascade")

    # --- projections ----------------------------------------------------------------------------------------

    async def upsert_event(self, event: dict) -> None:
        """A raw event sets the canonical columns only, so it never erases what enrichment added."""
        await self.pool.execute(
            f"""insert into {self.s}.events ({", ".join(_BASE)}) values ($1, $2, $3, $4, $5, $6, $7, $8)
                on conflict (tenant, event_id) do update set {", ".join(f"{c} = excluded.{c}" for c in _BASE[2:])}""",
            *self._base_values(event))

    async def upsert_enriched(self, event: dict) -> None:
        scores = [s["score"] for s in event.get("sentiment") or []]
        sentiment = sum(scores) / len(scores) if scores else None
        negative = any(s["label"] == "negative" for s in event.get("sentiment") or []) if scores else None
        entities = [{k: e[k] for k in ("field", "text", "label")} for e in event.get("entities") or []]
        columns = (*_BASE, "enriched", "sentiment", "negative", "entities")
        await self.pool.execute(
            f"""insert into {self.s}.events ({", ".join(columns)}, enriched_at)
                values ($1, $2, $3, $4, $5, $6, $7, $8, true, $9, $10, $11, clock_timestamp())
                on conflict (tenant, event_id) do update set {", ".join(f"{c} = excluded.{c}" for c in columns[2:])},
                  enriched_at = coalesce(events.enriched_at, excluded.enriched_at)""",
            *self._base_values(event), sentiment, negative, entities)

    @staticmethod
    def _base_values(event: dict) -> tuple:
        return (event["event_id"], event.get("tenant") or "default", event["source"], event["type"],
                event["stream_id"], _ts(event["occurred_at"]), dict(event.get("metrics") or {}),
                dict(event.get("attributes") or {}))

    async def upsert_anomaly(self, alert: dict) -> None:
        columns = ("alert_id", "dedup_key", "action", "tenant", "stream_id", "source", "metric", "value", "score",
                   "threshold", "severity", "window_start", "window_end", "detector", "model_version", "event_id",
                   "created_at")
        values: list[Any] = [alert.get(c) for c in columns]
        values[3] = values[3] or "default"
        for i in (11, 12, 16):
            values[i] = _ts(values[i])
        await self.pool.execute(
            f"""insert into {self.s}.anomalies ({", ".join(columns)})
                values ({", ".join(f"${i + 1}" for i in range(len(columns)))})
                on conflict (tenant, alert_id) do update set
                  {", ".join(f"{c} = excluded.{c}" for c in columns[1:] if c != "tenant")}""",
            *values)

    # --- KPIs, series and the rows behind them ----------------------------------------------------------------

    _AS_OF = "($5::timestamptz is null or projected_at <= $5)"
    _ENRICHED_BY = "($5::timestamptz is null or enriched_at <= $5)"
    _EVENTS_IN = ("tenant = $1 and occurred_at >= $2 and occurred_at < $3 "
                  f"and ($4::text[] is null or stream_id = any($4)) and {_AS_OF}")
    _ANOMALIES_IN = ("tenant = $1 and action = 'trigger' and window_end >= $2 and window_start < $3 "
                     f"and ($4::text[] is null or stream_id = any($4)) and {_AS_OF} "
                     "and ($6::text[] is null or metric = any($6))")

    def _args(self, scope: Scope) -> tuple:
        return scope.tenant, scope.start, scope.end, scope.streams, scope.as_of

    async def now(self) -> datetime:
        """The database's clock: `Scope.as_of` compares with rows stamped by it."""
        value: datetime = await self.pool.fetchval("select clock_timestamp()")
        return value

    async def stream_counts(self, scope: Scope) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"select stream_id, count(*) as n from {self.s}.events where {self._EVENTS_IN} "
            "group by stream_id order by stream_id", *self._args(scope))

    async def source_counts(self, scope: Scope) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"select source, count(*) as n from {self.s}.events where {self._EVENTS_IN} "
            "group by source order by source", *self._args(scope))

    async def metric_stats(self, scope: Scope) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""select stream_id, m.key as metric, avg(m.value::float8) as mean, max(m.value::float8) as max,
                       count(*) as n
                from {self.s}.events, jsonb_each_text(metrics) m
                where {self._EVENTS_IN} and ($6::text[] is null or m.key = any($6))
                group by stream_id, m.key order by stream_id, m.key""", *self._args(scope), scope.metrics)

    async def negative_shares(self, scope: Scope) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""select stream_id, 100.0 * avg(case when negative then 1 else 0 end) as share, count(*) as n
                from {self.s}.events where {self._EVENTS_IN} and negative is not null and {self._ENRICHED_BY}
                group by stream_id order by stream_id""", *self._args(scope))

    async def anomalies(self, scope: Scope) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""select alert_id, stream_id, source, metric, value, score, threshold, severity, window_start,
                       window_end, detector, model_version, event_id
                from {self.s}.anomalies where {self._ANOMALIES_IN} order by window_end, alert_id""",
            *self._args(scope), scope.metrics)

    async def series(self, scope: Scope, bucket: timedelta) -> list[asyncpg.Record]:
        """Mean of each metric of each stream per time bucket (buckets aligned on the window's start)."""
        return await self.pool.fetch(
            f"""select stream_id, m.key as metric, date_bin($7::interval, occurred_at, $2) as bucket,
                       avg(m.value::float8) as value, count(*) as n
                from {self.s}.events, jsonb_each_text(metrics) m
                where {self._EVENTS_IN} and ($6::text[] is null or m.key = any($6))
                group by 1, 2, 3 order by 1, 2, 3""", *self._args(scope), scope.metrics, bucket)

    async def rows(self, scope: Scope, *, table: str, stream: str | None = None, source: str | None = None,
                   metric: str | None = None, negative: bool | None = None, limit: int = 500) -> list[dict]:
        """The source rows of one figure: the events or anomaly alerts it was computed from."""
        if table == "anomalies":
            records = await self.pool.fetch(
                f"""select alert_id, stream_id, metric, value, score, threshold, severity, window_start, window_end,
                           event_id from {self.s}.anomalies
                    where {self._ANOMALIES_IN} and ($7::text is null or stream_id = $7)
                    order by window_end, alert_id limit {int(limit)}""",
                *self._args(scope), [metric] if metric else None, stream)
        else:
            records = await self.pool.fetch(
                f"""select event_id, stream_id, source, type, occurred_at, metrics,
                       case when {self._ENRICHED_BY} then sentiment end as sentiment,
                       case when {self._ENRICHED_BY} then negative end as negative
                    from {self.s}.events
                    where {self._EVENTS_IN} and ($6::text is null or stream_id = $6)
                      and ($7::text is null or source = $7) and ($8::text is null or metrics ? $8)
                      and ($9::boolean is null or (negative is not null and {self._ENRICHED_BY}))
                    order by occurred_at, event_id limit {int(limit)}""",
                *self._args(scope), stream, source, metric, negative)
        return [dict(r) for r in records]

    # --- reports ------------------------------------------------------------------------------------------------

    async def stored(self, report_id: str) -> tuple[dict, bytes, str]:
        row = await self.pool.fetchrow(f"select content, pdf, pdf_sha256 from {self.s}.reports where report_id = $1",
                                       report_id)
        if row is None:
            raise LookupError(f"no stored report {report_id}")
        return row["content"], row["pdf"], row["pdf_sha256"]

    # what the portal and the API show: published reports (a report is stored before it is published)
    _SHOWN = ("exists (select 1 from {s}.runs u where u.report_id = r.report_id "
              "and u.state in ('published', 'done'))")

    async def list_reports(self, tenant: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""select report_id, definition, version, title, period_start, period_end, generated_at
                from {self.s}.reports r where tenant = $1 and {self._SHOWN.format(s=self.s)}
                order by generated_at desc limit 200""", tenant)

    async def report(self, report_id: str, tenant: str) -> dict | None:
        """None as well for another tenant's report: its existence is not disclosed."""
        return await self.pool.fetchval(
            f"select content from {self.s}.reports r where report_id = $1 and tenant = $2 "
            f"and {self._SHOWN.format(s=self.s)}", report_id, tenant)

    async def pdf(self, report_id: str, tenant: str) -> bytes | None:
        return await self.pool.fetchval(
            f"select pdf from {self.s}.reports r where report_id = $1 and tenant = $2 "
            f"and {self._SHOWN.format(s=self.s)}", report_id, tenant)

    # --- portal sessions ----------------------------------------------------------------------------------------

    async def create_session(self, username: str, tenant: str, credential: str, hours: float) -> tuple[str, str]:
        """A new session: returns its token (for the cookie; only its hash is stored) and its CSRF token."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        await self.pool.execute(
            f"""insert into {self.s}.sessions (token_sha256, username, tenant, credential, csrf, expires_at)
                values ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))""",
            _sha256(token), username, tenant, credential, csrf, hours * 3600)
        # expired sessions go at each sign-in: the table never grows beyond the live ones
        await self.pool.execute(f"delete from {self.s}.sessions where expires_at < now()")
        return token, csrf

    async def session(self, token: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"select username, tenant, credential, csrf from {self.s}.sessions "
            "where token_sha256 = $1 and expires_at > now()", _sha256(token))

    async def end_session(self, token: str) -> None:
        await self.pool.execute(f"delete from {self.s}.sessions where token_sha256 = $1", _sha256(token))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
