"""Replay protection: one publication per (source, delivery id) within the replay window.

A delivery is claimed with an atomic set-if-absent that carries a unique token and an expiry. The claim becomes
the event's coordinates once Kafka acknowledged it, or is released if publishing failed, so the publisher's retry
is published rather than lost. A duplicate arriving while the first is in flight waits for its outcome.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

PENDING = "pending:"

# claimed -> 1; otherwise the current value (a pending token or the first event's coordinates)
_CLAIM = """
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
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)
        self.prefix = prefix
        self.poll = poll

    async def claim(self, source: str, delivery_id: str, window: int, wait: float) -> Claim | dict:
        """A Claim to publish under, or the coordinates of the delivery's first event. Waits up to `wait`
        seconds on a delivery in flight (then raises InFlight)."""
        key = f"{self.prefix}:{source}:{delivery_id}"
        token = PENDING + uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while True:
            found = await self._claim(keys=[key], args=[token, window])
            if found == 1:
                return Claim(key, token)
            if not found.startswith(b"pending:"):
                return orjson.loads(found)
            if time.monotonic() > deadline:
                raise InFlight(delivery_id)
            await asyncio.sleep(self.poll)

    async def complete(self, claim: Claim, coordinates: dict) -> None:
        await self._complete(keys=[claim.key], args=[claim.token, orjson.dumps(coordinates)])

    async def release(self, claim: Claim) -> None:
        await self._release(keys=[claim.key], args=[claim.token])
