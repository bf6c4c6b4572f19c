"""Per-source rate limit in Redis: a fixed window counter, shared by every worker and replica."""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

# one round trip: count the request and give the window its expiry when it opens
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str = "ingest:rate"):
        self._count = redis.register_script(_COUNT)
        self.prefix = prefix

    async def retry_after(self, source: str, limit: int, period: int) -> int | None:
        """None when the request fits in the current window, else the seconds until the next one."""
        now = time.time()
        window = int(now // period)
        count = await self._count(keys=[f"{self.prefix}:{source}:{window}"], args=[period + 1])
        if count <= limit:
            return None
        return max(1, math.ceil((window + 1) * period - now))
