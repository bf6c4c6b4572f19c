"""The service with its ops endpoints (/healthz, /readyz, /metrics), until cancelled."""

from __future__ import annotations

import asyncio
import contextlib

from platform_common.ops import kafka_check, ops_app, postgres_check, registry_check, serve

from .service import AnomalyService
from .settings import AnomalySettings


async def run(settings: AnomalySettings) -> None:
    s = settings
    service = AnomalyService(s)
    ops = asyncio.create_task(serve(ops_app("anomaly", {
        "kafka": kafka_check(s.kafka_bootstrap_servers), "registry": registry_check(s.schema_registry_url),
        "postgres": postgres_check(s.database_url)}), s.anomaly_port))
    try:
        await service.start()
        await service.run()
    finally:
        ops.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ops
        await service.stop()
