"""Sending to one receiver: rate limit, Retry-After, circuit breaker, retries with exponential backoff and jitter.

Every attempt is reported to `on_attempt`; what still fails after the last attempt raises `DeliveryFailed`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from aiolimiter import AsyncLimiter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .metrics import ATTEMPTS, CIRCUIT_OPEN, RETRIES
from .routing import Receiver

log = logging.getLogger(__name__)


class AttemptFailed(Exception):
    def __init__(self, reason: str, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.status_code = status_code
        self.retry_after = retry_after


class RateLimited(AttemptFailed):
    """429: the receiver is healthy but wants us to slow down, so it does not count against the circuit."""


class PermanentFailure(Exception):
    """A request the receiver rejects as invalid, or a receiver without its secret: retrying cannot help."""

    def __init__(self, reason: str, status_code: int | None = None):
        super().__init__(reason)
        self.status_code = status_code


class DeliveryFailed(Exception):
    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.attempts = attempts


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


OnAttempt = Callable[[str, int, int | None, str | None], Awaitable[None]]


class ReceiverClient:
    """The state notify keeps per receiver: its rate limiter and the time before which it must not be called."""

    def __init__(self, receiver: Receiver, http: httpx.AsyncClient, breakers: AsyncCircuitBreakerFactory,
                 max_attempts: int, backoff_initial: float, backoff_max: float):
        self.receiver = receiver
        self.http = http
        self.breakers = breakers
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        limit = receiver.rate_limit
        self.limiter = AsyncLimiter(limit.max_rate, limit.period_seconds) if limit else None
        self.not_before = 0.0  # monotonic time set by a 429's Retry-After, for every caller of this receiver

    async def send(self, url: str, body: dict, on_attempt: OnAttempt) -> int:
        """Posts `body` until the receiver accepts it; returns the number of attempts it took."""
        attempt = 0
        try:
            async for retrying in AsyncRetrying(
                    stop=stop_after_attempt(self.max_attempts), reraise=True,
                    retry=retry_if_exception_type((AttemptFailed, OpenedState)),
                    wait=wait_exponential_jitter(initial=self.backoff_initial, max=self.backoff_max,
                                                 jitter=self.backoff_initial)):
                with retrying:
                    attempt = retrying.retry_state.attempt_number
                    try:
                        status = await self._attempt(url, body)
                    except PermanentFailure as e:
                        await self._report(on_attempt, "failed", attempt, e.status_code, str(e))
                        raise
                    except (AttemptFailed, OpenedState) as e:
                        code = getattr(e, "status_code", None)
                        final = attempt >= self.max_attempts
                        await self._report(on_attempt, "failed" if final else "retrying", attempt, code, str(e))
                        if not final:
                            RETRIES.labels(self.receiver.name).inc()
                        raise
                    await self._report(on_attempt, "delivered", attempt, status, None)
                    return attempt
        except (AttemptFailed, OpenedState, PermanentFailure) as e:
            raise DeliveryFailed(f"{self.receiver.name}: {e}", attempt) from e
        raise AssertionError("unreachable")

    async def _report(self, on_attempt: OnAttempt, outcome: str, attempt: int, code: int | None,
                      error: str | None) -> None:
        ATTEMPTS.labels(self.receiver.name, outcome).inc()
        await on_attempt(outcome, attempt, code, error)

    async def _attempt(self, url: str, body: dict) -> int:
        wait = self.not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.limiter:
            await self.limiter.acquire()
        breaker = await self.breakers.get_breaker(self.receiver.name)
        async with breaker:
            try:
                response = await self.http.post(url, json=body)
            except httpx.HTTPError as e:
                raise AttemptFailed(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
            code = response.status_code
            if code == 429:
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
                if retry_after:
                    self.not_before = max(self.not_before, time.monotonic() + retry_after)
                raise RateLimited(f"429 rate limited (Retry-After {response.headers.get('retry-after')})", code,
                                  retry_after)
            if code >= 500 or code in (408, 425):
                raise AttemptFailed(f"HTTP {code}: {response.text[:200]}", code)
            if code >= 400:
                # the circuit counts failures of the receiver, not our bad requests
                raise PermanentFailure(f"HTTP {code}: {response.text[:300]}", code)
            return code


def circuit_breakers(threshold: int, ttl: float) -> AsyncCircuitBreakerFactory:
    factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=ttl,
                                         exclude=[RateLimited, PermanentFailure])

    def on_event(name: str, event_name: str, event) -> None:
        if event_name == "state_changed":
            CIRCUIT_OPEN.labels(name).set(1 if event.state == "opened" else 0)
            log.warning("circuit of receiver %s is %s", name, event.state)
    factory.add_listener(on_event)
    return factory
