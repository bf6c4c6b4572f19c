"""The HTTP app: `POST /webhooks/{source}` plus /healthz, /readyz, /metrics. Routes stay thin; see intake.py."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from platform_common.ops import kafka_check, ops_router, redis_check, registry_check
from platform_common.service import init_service
from platform_common.tracing import current_span

from .intake import IngestError, Intake
from .publish import EventPublisher
from .replay import ReplayGuard
from .settings import IngestSettings
from .sources import Source, load_sources

log = logging.getLogger(__name__)


class Accepted(BaseModel):
    event_id: str
    topic: str
    partition: int
    offset: int


class Error(BaseModel):
    error: str
    detail: str


def _error(description: str) -> dict:
    return {"model": Error, "description": description}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Accepted, "description": "A replay of a delivery already published: the first event's "
                                            "coordinates; nothing is published"},
    400: _error("Malformed body (not JSON) or request"),
    408: _error("The body did not arrive within the body timeout (slow sender)"),
    401: _error("Missing or wrong signature, or a signed timestamp outside the tolerance"),
    404: _error("Unknown source"),
    413: _error("Body over the source's limit"),
    415: _error("Content type is not JSON"),
    422: _error("The source's mapping cannot turn the body into a canonical event"),
    429: {**_error("Rate limit of the source reached"),
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}},
    503: {**_error("Kafka (or Redis) cannot take the event now: nothing was stored; retry"),
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}},
}

# the body is read as raw bytes (it is verified before parsing), so its schema is documented by hand
REQUEST_BODY = {"requestBody": {"required": True, "description": "The publisher's payload, signed as received",
                                "content": {"application/json": {"schema": {"type": "object"}}}}}


def create_app(settings: IngestSettings | None = None, sources: dict[str, Source] | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    sources = sources if sources is not None else load_sources(settings.ingest_sources_file, os.environ)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        init_service(settings)
        client = redis.from_url(settings.redis_url, socket_timeout=settings.ingest_publish_timeout,
                                socket_connect_timeout=settings.ingest_publish_timeout)
        publisher = EventPublisher(settings)
        await publisher.start()
        app.state.intake = Intake(sources, publisher, ReplayGuard(client), settings.ingest_publish_timeout,
                                  settings.ingest_body_timeout)
        log.info("ingest-webhook ready", extra={"sources": sorted(sources), "topic": settings.ingest_topic})
        try:
            yield
        finally:
            await publisher.stop()
            await client.aclose()

    app = FastAPI(title="ingest-webhook", version="0.1.0", lifespan=lifespan, default_response_class=ORJSONResponse,
                  description="Signed webhook intake: verified, mapped to the canonical event, published to "
                              f"`{settings.ingest_topic}`; `202` only after Kafka acknowledged.")
    app.include_router(ops_router({"kafka": kafka_check(settings.kafka_bootstrap_servers),
                                   "registry": registry_check(settings.schema_registry_url),
                                   "redis": redis_check(settings.redis_url)}))

    @app.post("/webhooks/{source}", status_code=202, tags=["webhooks"], summary="Receive one signed webhook",
              response_model=Accepted, responses=RESPONSES, openapi_extra=REQUEST_BODY)
    async def receive(request: Request,
                      source: str = Path(description="Source name from the sources file", examples=["demo"])):
        # the SERVER span of the webhook request roots the event's trace (or continues the sender's)
        with current_span("POST /webhooks/{source}", SpanKind.SERVER, {
                "http.request.method": "POST", "http.route": "/webhooks/{source}", "url.path": request.url.path},
                propagate.extract(request.headers)) as span:
            try:
                status, answer = await request.app.state.intake.receive(source, request)
            except IngestError as e:
                span.set_attribute("http.response.status_code", e.status)
                raise
            span.set_attribute("http.response.status_code", status)
        return ORJSONResponse(answer, status_code=status)

    @app.exception_handler(IngestError)
    async def ingest_error(request: Request, e: IngestError) -> ORJSONResponse:
        return ORJSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> ORJSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return ORJSONResponse({"error": code, "detail": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> ORJSONResponse:
        return ORJSONResponse({"error": "malformed_request", "detail": "the request does not match the API"},
                              status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> ORJSONResponse:
        log.exception("unexpected error")
        return ORJSONResponse({"error": "internal_error", "detail": "unexpected error; it was logged"},
                              status_code=500)

    return app
