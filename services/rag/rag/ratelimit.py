"""Generations per API key and minute. Each generation costs about a second of CPU (or a paid endpoint's tokens),
so one key must not be able to take the whole service. The count lives in Redis, so every replica shares one
budget per key; while Redis is away an in-process count stands in, so the limit never lapses."""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from prometheus_client import Counter

log = logging.getLogger(__name__)

LIMITED = Counter("rag_generation_rate_limited_total", "Query generations refused by the per-key rate limit")


class GenerationLimit:
    def __init__(self, client: redis.Redis | None, per_minute: int, prefix: str = "rag:genlimit"):
        self.client = client
        self.per_minute = per_minute
        self.prefix = prefix
        self._local: dict[tuple[str, int], int] = {}

    async def take(self, key_id: str) -> float | None:
        """Counts one generation for `key_id`: None when allowed, else the seconds until the next window."""
        now = time.time()
        window = int(now // 60)
        count = await self._count(key_id, window)
        if count <= self.per_minute:
            return None
        LIMITED.inc()
        return max(1.0, 60 - now % 60)

    async def _count(self, key_id: str, window: int) -> int:
        if self.client is not None:
            key = f"{self.prefix}:{key_id}:{window}"
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.incr(key)  # queued on the pipeline, sent by execute() (MULTI/EXEC)
                    pipe.expire(key, 120)
                    count, _ = await pipe.execute()
                return int(count)
            except (redis.RedisError, OSError) as e:
                log.warning("generation rate limit: Redis unavailable, counting in process: %s", type(e).__name__)
        for stale in [k for k in self._local if k[1] < window]:
            del self._local[stale]
        self._local[(key_id, window)] = self._local.get((key_id, window), 0) + 1
        return self._local[(key_id, window)]
