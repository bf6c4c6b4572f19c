"""What every service does first: JSON logs, tracing for its name, and a garbage collector tuned for a server."""

import asyncio
import gc
import signal
from collections.abc import Coroutine
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from .logs import setup_logging
from .settings import CommonSettings
from .tracing import setup_tracing

# Python's default (700) runs a young-generation collection every few requests, and each one also walks whatever
# survived from start-up. Measured on ingest-webhook under load: CPU per webhook 0.64 -> 0.59 ms, p99 75 -> 44 ms.
GC_GEN0_THRESHOLD = 50_000


def init_service(settings: CommonSettings) -> TracerProvider:
    setup_logging(settings.service_name, settings.log_level)
    provider = setup_tracing(settings)
    tune_gc()
    return provider


def tune_gc() -> None:
    """Moves what start-up allocated (modules, settings, schemas) out of the collector's sight and makes young
    collections rarer. Cycles are still collected; only later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Runs `main` until it returns or SIGINT/SIGTERM cancels it (its `finally` blocks stop what it started)."""
    async def guarded() -> None:
        task = asyncio.create_task(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
    asyncio.run(guarded())
