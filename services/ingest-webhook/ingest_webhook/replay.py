"""Replay protection: one publication per (source, delivery id) within the replay window.

A delivery is claimed with an atomic set-if-absent that carries a unique token and an expiry. The claim becomes
the event's coordinates once Kafka acknowledged it, or is released if publishing failed, so the publisher's retry
is published rather than lost. A duplicate arriving while the first is in flight waits for its outcome.
The same script counts the request in its source's rate window first, so admission is one Redis call; the calls of
concurrent requests share a pipeline (autopipeline.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from .autopipeline import AutoPipeline
from .ratelimit import RateLimited, RateWindow

PENDING = b"pending:"

# KEYS: delivery, rate window. ARGV: token, delivery expiry, rate limit, rate window expiry.
# -> 0: rate limited; 1: claimed; otherwise the delivery's value (a pending token or the first coordinates)
_ADMIT = """
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if n > tonumber(ARGV[3]) then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return redis.call('GET', KEYS[1])
"""
_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class InFlight(Exception):
    """The same delivery is still being published by another request."""


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    token: str


class ReplayGuard:
    def __init__(self, redis: Redis, prefix: str = "ingest:delivery", poll: float = 0.02):
        self.redis = AutoPipeline(redis)
        self.prefix = prefix
        self.poll = poll

    async def claim(self, source: str, delivery_id: str, window: int, wait: float, rate: RateWindow) -> Claim | dict:
        """A Claim to publish under, or the coordinates of the delivery's first event. Raises RateLimited, or
        InFlight after waiting `wait` seconds on the same delivery in flight elsewhere."""
        key = f"{self.prefix}:{source}:{delivery_id}"
        token = PENDING.decode() + uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while True:
            found = await self.redis.eval(_ADMIT, [key, rate.key], [token, window, rate.limit, rate.expiry])
            if found == 0:
                raise RateLimited(rate.retry_after)
            if found == 1:
                return Claim(key, token)
            if not found.startswith(PENDING):
                return orjson.loads(found)
            if time.monotonic() > deadline:
                raise InFlight(delivery_id)
            await asyncio.sleep(self.poll)

    async def complete(self, claim: Claim, coordinates: dict) -> None:
        await self.redis.eval(_COMPLETE, [claim.key], [claim.token, orjson.dumps(coordinates)])

    async def release(self, claim: Claim) -> None:
        await self.redis.eval(_RELEASE, [claim.key], [claim.token])
