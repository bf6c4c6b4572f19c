"""Per-source rate limit in Redis: a fixed window counter shared by every worker and replica.

The counting itself runs in the replay claim's script (replay.py), so admitting a delivery is one round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class RateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RateWindow:
    key: str  # the counter of the current window
    limit: int
    expiry: int  # seconds the counter lives: the window and a margin
    retry_after: int  # seconds until the next window opens


def current_window(source: str, limit: int, period: int, now: float, prefix: str = "ingest:rate") -> RateWindow:
    window = int(now // period)
    return RateWindow(f"{prefix}:{source}:{window}", limit, period + 1,
                      max(1, math.ceil((window + 1) * period - now)))
