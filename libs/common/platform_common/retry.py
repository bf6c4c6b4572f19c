"""Waiting out a dependency that is down, as opposed to giving up on a record that cannot be processed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import redis.exceptions
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

log = logging.getLogger(__name__)
T = TypeVar("T")

# A dependency that is down (a refused or dropped connection, PostgreSQL stopping or starting): waiting for it
# helps and a DLQ would not, since the record itself is fine
UNAVAILABLE = (ConnectionError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
               asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError, redis.exceptions.ConnectionError)


async def until_available(call: Callable[[], Awaitable[T]], what: str) -> T:
    """`call()`, retried with capped exponential backoff for as long as it fails with UNAVAILABLE. Meant for the
    point where a consumer would otherwise crash or dead-letter a good record: it waits there, commits nothing,
    and its readiness check reports the dependency meanwhile."""
    def warn(state) -> None:
        e = state.outcome.exception()
        log.warning("%s unavailable, retrying in %.1fs: %s", what, state.next_action.sleep,
                    f"{type(e).__name__}: {e}"[:300])

    async for attempt in AsyncRetrying(retry=retry_if_exception_type(UNAVAILABLE), reraise=True,
                                       wait=wait_exponential(multiplier=0.2, max=5), before_sleep=warn):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # AsyncRetrying without a stop condition only ends by returning
