"""`/healthz`, `/readyz` and `/metrics` for every service, and the readiness checks they share."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

Check = Callable[[], Awaitable[object]]


def ops_router(checks: dict[str, Check], timeout: float = 2.0) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", summary="Every dependency answers; 503 with the failing ones otherwise",
                responses={503: {"description": "A dependency is unreachable"}})
    async def readyz() -> JSONResponse:
        async def run(check: Check) -> str | None:
            try:
                await asyncio.wait_for(check(), timeout)
                return None
            except Exception as e:  # the reason goes into the body; readiness never raises
                return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        results = dict(zip(checks, await asyncio.gather(*(run(c) for c in checks.values())), strict=True))
        failing = {name: reason for name, reason in results.items() if reason}
        if failing:
            return JSONResponse({"status": "not ready", "failing": failing}, status_code=503)
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return router


def _registry() -> CollectorRegistry:
    """The metrics of this process, or of all its sibling worker processes when they share a
    PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode): any worker may answer the scrape."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def ops_app(title: str, checks: dict[str, Check]) -> FastAPI:
    app = FastAPI(title=title)
    app.include_router(ops_router(checks))
    return app


async def serve(app: FastAPI, port: int, host: str = "0.0.0.0") -> None:
    """Runs `app` with uvicorn on the current event loop (for services whose main loop is not HTTP). The service
    wires the app before, so no lifespan events: a cancelled lifespan would only log a traceback at shutdown."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                           lifespan="off"))
    # the service owns signals, not the ops endpoint: uvicorn's serve() would take SIGTERM over, shut down only
    # itself, then re-raise the signal, killing the service in the middle of whatever it was doing
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]
    await server.serve()


# --- readiness checks of the shared dependencies ----------------------------------------------------------

def kafka_check(bootstrap_servers: str) -> Check:
    async def check() -> None:
        host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        await writer.wait_closed()
    return check


def registry_check(url: str) -> Check:
    import httpx

    async def check() -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            (await client.get(f"{url}/subjects")).raise_for_status()
    return check


def postgres_check(dsn: str) -> Check:
    import asyncpg

    async def check() -> None:
        conn = await asyncpg.connect(dsn, timeout=2)
        try:
            await conn.execute("select 1")
        finally:
            await conn.close()
    return check


def redis_check(url: str) -> Check:
    import redis.asyncio as redis

    async def check() -> None:
        client = redis.from_url(url, socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()
    return check
