"""PostgreSQL persistence: model versions with their metadata and weights, and each stream's detector state
with the last offset it reflects (so a replayed record is recognised and skipped after a restart)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg
import orjson

from .model import TrainedModel

SCHEMA_SQL = """
create schema if not exists {s};
create table if not exists {s}.models (
    version text primary key,
    stream_id text not null,
    metric text not null,
    created_at timestamptz not null default now(),
    train_start timestamptz not null,
    train_end timestamptz not null,
    reason text not null,
    hyperparameters jsonb not null,
    validation_error double precision not null,
    error_median double precision not null,
    error_mad double precision not null,
    center double precision not null,
    scale double precision not null,
    weights bytea not null
);
create index if not exists models_stream on {s}.models (stream_id, metric, created_at);
create table if not exists {s}.streams (
    stream_id text primary key,
    partition integer not null,
    last_offset bigint not null,
    detectors jsonb not null,
    updated_at timestamptz not null default now()
);
"""


@dataclass
class StreamRow:
    partition: int
    last_offset: int
    detectors: dict[str, dict]  # metric -> MetricDetector.snapshot()


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


class Store:
    def __init__(self, pool: asyncpg.Pool, schema: str):
        self.pool = pool
        self.s = schema

    @classmethod
    async def connect(cls, dsn: str, schema: str) -> Store:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            # concurrent first starts must not race on DDL
            async with conn.transaction():
                await conn.execute("select pg_advisory_xact_lock(hashtext($1))", schema)
                await conn.execute(SCHEMA_SQL.format(s=schema))
        return cls(pool, schema)

    async def close(self) -> None:
        await self.pool.close()

    async def count_models(self, stream_id: str, metric: str) -> int:
        return await self.pool.fetchval(f"select count(*) from {self.s}.models where stream_id=$1 and metric=$2",
                                        stream_id, metric)

    async def save_model(self, stream_id: str, metric: str, model: TrainedModel, span: list[int], reason: str
                         ) -> None:
        await self.pool.execute(
            f"""insert into {self.s}.models (version, stream_id, metric, train_start, train_end, reason,
                hyperparameters, validation_error, error_median, error_mad, center, scale, weights)
                values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) on conflict (version) do nothing""",
            model.version, stream_id, metric, _ts(span[0]), _ts(span[1]), reason, json.dumps(model.metadata),
            model.metadata["validation_error"], model.error_median, model.error_mad, model.center, model.scale,
            model.to_bytes())

    async def load_model(self, version: str) -> TrainedModel | None:
        row = await self.pool.fetchrow(
            f"""select weights, center, scale, error_median, error_mad, hyperparameters from {self.s}.models
                where version=$1""", version)
        if row is None:
            return None
        return TrainedModel.from_bytes(row["weights"], version, row["center"], row["scale"], row["error_median"],
                                       row["error_mad"], json.loads(row["hyperparameters"]))

    async def load_stream(self, stream_id: str) -> StreamRow | None:
        row = await self.pool.fetchrow(f"select partition, last_offset, detectors from {self.s}.streams "
                                       f"where stream_id=$1", stream_id)
        if row is None:
            return None
        return StreamRow(row["partition"], row["last_offset"], orjson.loads(row["detectors"]))

    async def save_streams(self, rows: dict[str, StreamRow]) -> None:
        await self.pool.executemany(
            f"""insert into {self.s}.streams (stream_id, partition, last_offset, detectors) values ($1,$2,$3,$4)
                on conflict (stream_id) do update set partition=excluded.partition, last_offset=excluded.last_offset,
                detectors=excluded.detectors, updated_at=now()""",
            # orjson: a stream's state is thousands of numbers, written after every batch
            [(sid, r.partition, r.last_offset, orjson.dumps(r.detectors, option=orjson.OPT_SERIALIZE_NUMPY).decode())
             for sid, r in rows.items()])
