"""PostgreSQL persistence: model versions with their metadata and weights, and each stream's detector state with
the last offset it reflects (so a replayed record is recognised and skipped after a restart), both keyed by
(tenant, stream id)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from platform_common.migrations import migrate

from .model import TrainedModel

MIGRATIONS = Path(__file__).with_name("migrations")

StreamKey = tuple[str, str]  # (tenant, stream_id): two tenants may name a stream alike


@dataclass
class StreamRow:
    partition: int
    last_offset: int
    detectors: dict[str, dict]  # metric -> MetricDetector.snapshot()


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Store:
    def __init__(self, pool: asyncpg.Pool, schema: str):
        self.pool = pool
        self.s = schema

    @classmethod
    async def connect(cls, dsn: str, schema: str) -> Store:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await migrate(conn, schema, MIGRATIONS)
        return cls(pool, schema)

    async def close(self) -> None:
        await self.pool.close()

    async def count_models(self, key: StreamKey, metric: str) -> int:
        return await self.pool.fetchval(f"select count(*) from {self.s}.models where tenant=$1 and stream_id=$2 "
                                        f"and metric=$3", *key, metric)

    async def save_model(self, key: StreamKey, metric: str, model: TrainedModel, span: list[int], reason: str
                         ) -> None:
        await self.pool.execute(
            f"""insert into {self.s}.models (version, tenant, stream_id, metric, train_start, train_end, reason,
                hyperparameters, validation_error, error_median, error_mad, center, scale, weights)
                values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) on conflict (version) do nothing""",
            model.version, *key, metric, _ts(span[0]), _ts(span[1]), reason, json.dumps(model.metadata),
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

    async def load_stream(self, key: StreamKey) -> StreamRow | None:
        row = await self.pool.fetchrow(f"select partition, last_offset, detectors from {self.s}.streams "
                                       f"where tenant=$1 and stream_id=$2", *key)
        if row is None:
            return None
        return StreamRow(row["partition"], row["last_offset"], orjson.loads(row["detectors"]))

    async def streams_awaiting_models(self, partitions: list[int]) -> list[StreamKey]:
        """The streams of these partitions with a training requested (and perhaps points held for its model)."""
        rows = await self.pool.fetch(
            f"""select tenant, stream_id from {self.s}.streams where partition = any($1) and exists
                (select 1 from jsonb_each(detectors) d where jsonb_typeof(d.value->'request') = 'object')""",
            partitions)
        return [(r["tenant"], r["stream_id"]) for r in rows]

    async def save_streams(self, rows: dict[StreamKey, StreamRow]) -> None:
        await self.pool.executemany(
            f"""insert into {self.s}.streams (tenant, stream_id, partition, last_offset, detectors)
                values ($1,$2,$3,$4,$5)
                on conflict (tenant, stream_id) do update set partition=excluded.partition,
                last_offset=excluded.last_offset, detectors=excluded.detectors, updated_at=now()""",
            # orjson: a stream's state is thousands of numbers, written after every batch
            [(*key, r.partition, r.last_offset, orjson.dumps(r.detectors, option=orjson.OPT_SERIALIZE_NUMPY).decode())
             for key, r in rows.items()])
