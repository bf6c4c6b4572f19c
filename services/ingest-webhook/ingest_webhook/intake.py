"""One webhook delivery from request to answer: limits, verification, mapping, replay check, publication."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request

from .mapping import MappingError
from .metrics import REQUESTS, VERIFICATION_FAILURES
from .publish import EventPublisher, PublishUnavailable
from .ratelimit import RateLimited, current_window
from .replay import Claim, InFlight, ReplayGuard
from .signatures import SCHEMES, VerificationError
from .sources import Source

log = logging.getLogger(__name__)


class IngestError(Exception):
    """An answer other than 2xx: `code` is what a client acts on, `detail` one line for people."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def _json_media_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit`, without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise IngestError(400, "malformed_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise IngestError(413, "payload_too_large", f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestError(413, "payload_too_large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON syntax, but no double holds it
        raise ValueError(f"{text[:40]} overflows a double")
    return value


def parse_json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits, which JSON allows: the standard parser takes those, but not
        # the NaN and Infinity it would otherwise accept (RFC 8259 has no such numbers; Avro and JSON out
        # could not carry them)
        return json.loads(body, parse_constant=_not_json, parse_float=_finite)


class Intake:
    def __init__(self, sources: dict[str, Source], publisher: EventPublisher, replay: ReplayGuard,
                 publish_timeout: float, body_timeout: float):
        self.sources = sources
        self.publisher = publisher
        self.replay = replay
        self.publish_timeout = publish_timeout
        self.body_timeout = body_timeout

    async def receive(self, name: str, request: Request) -> tuple[int, dict]:
        source = self.sources.get(name)
        label = name if source else "unknown"  # bounded label values: unknown names are not echoed into metrics
        try:
            if source is None:
                raise IngestError(404, "unknown_source", "no webhook source of this name")
            status, answer = await self._receive(source, request)
        except IngestError as e:
            REQUESTS.labels(label, e.code).inc()
            if e.status >= 500 or e.status == 401:
                log.info("webhook refused", extra={"source": label, "status": e.status, "code": e.code})
            raise
        REQUESTS.labels(label, "accepted" if status == 202 else "duplicate").inc()
        return status, answer

    async def _receive(self, source: Source, request: Request) -> tuple[int, dict]:
        if not _json_media_type(request.headers.get("content-type")):
            raise IngestError(415, "unsupported_media_type", "the body must be application/json")
        try:
            # a slow-loris sender must not hold a connection and its buffer for ever
            async with asyncio.timeout(self.body_timeout):  # unlike wait_for, no extra task per request
                body = await read_body(request, source.max_body_bytes)
        except TimeoutError:
            raise IngestError(408, "request_timeout", f"the body did not arrive within {self.body_timeout:g} s",
                              {"Connection": "close"}) from None
        now = time.time()
        try:
            verified = SCHEMES[source.scheme](request.headers, body, source.keys, source.tolerance_seconds, now)
        except VerificationError as e:
            VERIFICATION_FAILURES.labels(source.name, e.reason).inc()
            raise IngestError(401, "invalid_signature", e.detail) from None
        try:
            raw_payload = body.decode()  # UTF-8 only, as JSON on the wire must be
            payload = parse_json(body)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than any parser should follow
            raise IngestError(400, "malformed_body", "the body is not valid JSON (UTF-8)") from None
        try:
            event = source.mapping.to_event(
                payload, source=source.name, delivery_id=verified.delivery_id, received_at=int(now * 1000),
                signed_at=verified.timestamp, raw_payload=raw_payload, headers=dict(request.headers),
                tenant=source.tenant, default_stream_id=source.default_stream_id, dedup_id=verified.dedup_id)
        except MappingError as e:
            raise IngestError(422, "unmappable_payload", str(e)) from None

        admitted = time.monotonic()
        try:
            # a seen id within the window is a replay; the key outlives a signed timestamp's whole validity
            # (GitHub signs no time nor id: its body's HMAC is remembered for the source's window of days)
            claim = await self.replay.claim(source.name, verified.dedup_id or event["delivery_id"],
                                            source.dedup_seconds,
                                            self.publish_timeout,
                                            current_window(source.name, source.rate_limit, source.rate_period, now))
        except RateLimited as e:
            raise IngestError(429, "rate_limited", "too many webhooks for this source",
                              {"Retry-After": str(e.retry_after)}) from None
        except RedisError as e:
            raise IngestError(503, "dependency_unavailable", "replay protection is unavailable",
                              {"Retry-After": "1"}) from e
        except InFlight:
            raise IngestError(503, "delivery_in_flight", "this delivery is being published by another request",
                              {"Retry-After": "1"}) from None
        if not isinstance(claim, Claim):
            return 200, claim  # a replay: the first event's coordinates, nothing published
        # time spent waiting on a duplicate in flight comes out of the publish bound: 503 stays within it
        budget = self.publish_timeout - (time.monotonic() - admitted)
        return 202, await self._publish(event, claim, max(budget, 0.05))

    async def _publish(self, event: dict, claim: Claim, timeout: float) -> dict:
        try:
            coordinates = await self.publisher.publish(event, timeout)
        except BaseException as e:
            # the claim must not outlive a failed publication, or the sender's retry would be dropped as a replay
            await asyncio.shield(self._release(claim))
            if isinstance(e, PublishUnavailable):
                raise IngestError(503, "kafka_unavailable", "the event could not be stored; retry later",
                                  {"Retry-After": "1"}) from None
            raise
        try:
            await self.replay.complete(claim, coordinates)
        except RedisError:  # stored all the same: answer 202; the pending claim expires with the window
            log.warning("could not record the coordinates of a published delivery", extra={"source": event["source"]})
        return coordinates

    async def _release(self, claim: Claim) -> None:
        try:
            await self.replay.release(claim)
        except RedisError:
            log.warning("could not release a delivery claim; retries wait for its expiry")
