"""`python -m reports.replay [--swap]` (`make replay`): rebuilds the projections from the topics, the source of truth.

The projector reads every topic from its beginning, with a group of its own, into a fresh schema until it reaches the
end offsets taken at start; the rebuilt tables are then compared with the live ones. `--swap` replaces the live
projection tables' rows with the rebuilt ones (generated reports are kept); stop the reports service first, or rows
it projects meanwhile may be overwritten.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg
from aiokafka import TopicPartition

from platform_common.kafka import Publisher

from .projector import projector
from .settings import ReportsSettings
from .store import Store

TABLES = {"events": "tenant, event_id", "anomalies": "tenant, alert_id"}


async def fingerprint(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over the rows in key order, per projection table."""
    out = {}
    for table, key in TABLES.items():
        # when a row was projected is not its content: a rebuild stamps every row anew
        row = await conn.fetchrow(
            f"select count(*) as n, md5(coalesce(string_agg((to_jsonb(t) - 'projected_at' - 'enriched_at')::text, "
            f"'|' order by {key}), '')) as digest from {schema}.{table} t")
        out[table] = (row["n"], row["digest"])
    return out


async def rebuild(settings: ReportsSettings, target: str) -> None:
    """Runs the projector from the beginning of its topics into `target` until it reached their current ends."""
    store = await Store.connect(settings.database_url, target)
    await store.drop()
    await store.create()
    replay_settings = settings.model_copy(update={"reports_db_schema": target,
                                                  "reports_group": f"{settings.reports_group}-replay-{time.time_ns()}"})
    publisher = Publisher(replay_settings)
    await publisher.start()
    consumer = projector(replay_settings, store, publisher)
    await consumer.start()
    try:
        topics = consumer.topics
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.consumer.partitions_for_topic(t) or ()]
        ends = await consumer.consumer.end_offsets(partitions)
        task = asyncio.create_task(consumer.run(batch_timeout_ms=200))

        async def caught_up() -> bool:
            committed = {tp: await consumer.consumer.committed(tp) or 0 for tp in partitions}
            return all(committed[tp] >= end for tp, end in ends.items())

        while not await caught_up():
            if task.done():
                task.result()
            await asyncio.sleep(0.5)
        task.cancel()
    finally:
        await consumer.stop()
        await publisher.stop()
        await store.close()


async def replay(settings: ReportsSettings, swap: bool) -> bool:
    live = settings.reports_db_schema
    target = f"{live}_replay"
    started = time.monotonic()
    await rebuild(settings, target)
    conn = await asyncpg.connect(settings.database_url)
    try:
        rebuilt = await fingerprint(conn, target)
        current = await fingerprint(conn, live) if await conn.fetchval(
            "select 1 from information_schema.schemata where schema_name = $1", live) else {}
        print(f"replay: rebuilt {', '.join(f'{t}: {n} rows' for t, (n, _) in rebuilt.items())} "
              f"in {time.monotonic() - started:.1f}s")
        same = rebuilt == current
        print("replay: the rebuilt projections are identical to the live ones" if same else
              f"replay: the rebuilt projections differ from the live ones ({live}); `--swap` replaces them")
        if swap:
            await (await Store.connect(settings.database_url, live)).close()  # creates the live tables if missing
            async with conn.transaction():
                for table in TABLES:
                    await conn.execute(f"truncate {live}.{table}")
                    await conn.execute(f"insert into {live}.{table} select * from {target}.{table}")
            print(f"replay: the live projections ({live}) now hold the rebuilt rows")
        await conn.execute(f"drop schema {target} cascade")
        return same or swap
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swap", action="store_true", help="make the rebuilt projections the live ones")
    args = parser.parse_args()
    try:
        return 0 if asyncio.run(replay(ReportsSettings(), args.swap)) else 1
    except (OSError, asyncpg.PostgresError) as e:
        print(f"replay: {e}; is the stack up (`make up`)?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
