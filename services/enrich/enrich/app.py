"""The Faust app: one agent consuming the raw topic in batches, enriching and publishing each batch before it is acked.

Faust commits only acked offsets and `take_events` acks a batch after the agent's loop body returns, so a crash
re-delivers whatever was not published yet (at-least-once, outputs idempotent on event_id).
"""

from __future__ import annotations

import faust
from faust.contrib.asgi import serve_asgi
from mode import Service
from platform_common.ops import kafka_check, ops_app, registry_check

from .pipeline import Enricher, Record
from .settings import EnrichSettings


def create_app(settings: EnrichSettings) -> faust.App:
    datadir = settings.data_dir / "faust" / settings.enrich_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.enrich_app_id,
        broker=";".join(f"kafka://{b}" for b in settings.kafka_bootstrap_servers.split(",")),
        datadir=str(datadir),
        autodiscover=False,
        # topics are created by ensure_topics at start; no assignor leader topic is needed without tables
        topic_allow_declare=False,
        topic_disable_leader=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.enrich_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.enrich_session_timeout_s / 3),
        stream_buffer_maxsize=4 * settings.enrich_stream_batch,
        web_port=settings.enrich_port,
        web_bind="0.0.0.0",
    )
    source = app.topic(settings.enrich_input_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    enricher = Enricher(settings, group=settings.enrich_app_id)

    @app.agent(source, concurrency=settings.enrich_concurrency)
    async def enrich(stream):
        await enricher.ensure_started()
        async for events in stream.take_events(settings.enrich_stream_batch, within=settings.enrich_stream_wait_s):
            await enricher.handle([Record(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                                          e.message.value, list(e.message.headers or ())) for e in events])

    @app.service
    class Models(Service):
        async def on_stop(self) -> None:
            await enricher.stop()

    serve_asgi(app, ops_app("enrich", {
        "kafka": kafka_check(settings.kafka_bootstrap_servers),
        "schema_registry": registry_check(settings.schema_registry_url),
    }), port=settings.enrich_port, log_config=None, access_log=False)
    return app
