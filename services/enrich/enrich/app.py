"""The service: the raw topic through the models to the enriched topic on the platform's stream runtime, exactly once
by default (each batch's outputs, dead letters and consumed offsets in one Kafka transaction), with ops endpoints."""

from __future__ import annotations

import asyncio
import contextlib

from platform_common.ops import kafka_check, ops_app, registry_check, serve
from platform_common.stream import Stream, stream_publisher

from .pipeline import Enricher
from .settings import EnrichSettings


def create_stream(settings: EnrichSettings) -> tuple[Stream, Enricher]:
    group = settings.enrich_app_id
    publisher = stream_publisher(settings, settings.enrich_processing_guarantee, group, settings.enrich_instance_id)
    enricher = Enricher(settings, group, publisher)
    stream = Stream(settings, [settings.enrich_input_topic], group, publisher, enricher.handle,
                    guarantee=settings.enrich_processing_guarantee, batch_size=settings.enrich_stream_batch,
                    linger_ms=int(settings.enrich_stream_wait_s * 1000),
                    session_timeout_ms=int(settings.enrich_session_timeout_s * 1000),
                    heartbeat_interval_ms=int(min(3.0, settings.enrich_session_timeout_s / 3) * 1000))
    return stream, enricher


async def run(settings: EnrichSettings) -> None:
    stream, enricher = create_stream(settings)
    ops = asyncio.create_task(serve(ops_app("enrich", {
        "kafka": kafka_check(settings.kafka_bootstrap_servers),
        "schema_registry": registry_check(settings.schema_registry_url),
    }), settings.enrich_port, settings.enrich_host))
    try:
        await enricher.start()
        await stream.publisher.start()  # with a transactional id: fences an earlier process with the same id
        await stream.start()
        await stream.run()
    finally:
        ops.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ops
        await stream.stop()
        await stream.publisher.stop()
        await enricher.stop()
