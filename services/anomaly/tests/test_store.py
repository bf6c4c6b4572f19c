"""The anomaly schema against the real PostgreSQL: a database made by the release that keyed streams by stream id
alone is upgraded in place, and two tenants naming a stream alike get separate rows."""

import asyncio
import uuid

import asyncpg

from anomaly.settings import AnomalySettings
from anomaly.store import MIGRATIONS, Store, StreamRow


def test_a_database_of_the_previous_release_is_upgraded_without_losing_a_stream():
    settings = AnomalySettings()
    schema = f"anomaly_store_{uuid.uuid4().hex[:10]}"

    async def scenario() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            # what the previous release created at start, with one stream in it
            await conn.execute(f"create schema {schema}")
            await conn.execute((MIGRATIONS / "0001_models_and_streams.sql").read_text().replace("{s}", schema))
            await conn.execute(f"insert into {schema}.streams (stream_id, partition, last_offset, detectors) "
                               f"values ('legacy', 1, 41, '{{\"latency_ms\": {{\"model_version\": null}}}}')")
            store = await Store.connect(settings.database_url, schema)
            try:
                old = await store.load_stream(("default", "legacy"))
                assert (old.partition, old.last_offset) == (1, 41) and list(old.detectors) == ["latency_ms"]
                await store.save_streams({("acme", "legacy"): StreamRow(2, 7, {}),
                                          ("default", "legacy"): StreamRow(1, 42, old.detectors)})
                assert (await store.load_stream(("acme", "legacy"))).last_offset == 7
                assert (await store.load_stream(("default", "legacy"))).last_offset == 42
                assert await store.load_stream(("globex", "legacy")) is None
            finally:
                await store.close()
            # a second start applies nothing again
            store = await Store.connect(settings.database_url, schema)
            await store.close()
            assert await conn.fetchval(f"select count(*) from {schema}.schema_migrations") == 2
            assert await conn.fetchval(f"select count(*) from {schema}.streams") == 2
        finally:
            await conn.execute(f"drop schema if exists {schema} cascade")
            await conn.close()

    asyncio.run(scenario())
