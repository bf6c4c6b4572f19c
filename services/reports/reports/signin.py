"""Portal sign-in: argon2id password checks off the event loop, at the same cost for unknown users, and login limits
per client address and per user name.

A password check costs tens of milliseconds of CPU by design; on the event loop that froze the portal at a few
requests a second, so checks run in a small thread pool (argon2 releases the GIL) behind a semaphore. An unknown
user name is checked against a dummy hash made with the same parameters, so the answer takes as long as for a
known name and does not reveal which names exist. The limits count failures in a sliding window: per address
(one client trying many names) and per user name (many clients trying one name); over either, the portal answers
429 without checking the password. The counts are in process memory: the portal runs as a single replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from prometheus_client import Counter

from .config import User

log = logging.getLogger(__name__)

ATTEMPTS = Counter("reports_login_attempts_total", "Portal sign-in attempts by outcome", ["outcome"])
# argon2id as OWASP recommends it (46 MiB, 1 pass, 1 lane): one thread per check, so two checks at a time fill the
# pool without oversubscribing the cores the event loop needs
HASHER = PasswordHasher(time_cost=1, memory_cost=47104, parallelism=1)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def credential_fingerprint(user: User) -> str:
    """Stored with each session: when the user's hash changes (a new password), their sessions end."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:32]


class Authenticator:
    def __init__(self, users: list[User], workers: int = 2):
        self.users = {u.username: u for u in users}
        # the dummy costs what the users' hashes cost: made with their parameters, not the hasher's defaults
        params = []
        for user in users:
            if (found := extract_parameters(user.password_hash)) not in params:
                params.append(found)
        if len(params) > 1:
            log.warning("portal users' password hashes use %d parameter sets: sign-in time tells them apart; "
                        "rehash them with `python -m reports hash-password`", len(params))
        hasher = PasswordHasher.from_parameters(params[0]) if params else HASHER
        self._dummy = hasher.hash(secrets.token_urlsafe(16))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(workers)

    def user(self, username: str) -> User | None:
        return self.users.get(username)

    async def authenticate(self, username: str, password: str) -> User | None:
        user = self.users.get(username)
        stored = user.password_hash if user else self._dummy
        async with self._slots:
            ok = await asyncio.get_running_loop().run_in_executor(self._pool, _verify, stored, password)
        return user if ok and user is not None else None

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class LoginLimits:
    def __init__(self, per_address: int, per_user: int, window_seconds: float, max_keys: int = 100_000):
        self.limits = {"address": per_address, "user": per_user}
        self.window = window_seconds
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def retry_after(self, address: str, username: str) -> float | None:
        """Seconds until a new attempt is allowed, or None if it is allowed now."""
        now = time.monotonic()
        waits = []
        for kind, key in (("address", address), ("user", username)):
            times = self._failures.get((kind, key))
            if times is None:
                continue
            self._prune(times, now)
            if len(times) >= self.limits[kind]:
                waits.append(times[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, address: str, username: str) -> None:
        now = time.monotonic()
        for key in (("address", address), ("user", username)):
            self._recent(key, now).append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:  # bounded memory under a spray of names or addresses
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("user", username), None)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        return self._prune(self._failures.setdefault(key, deque()), now)

    def _prune(self, times: deque[float], now: float) -> deque[float]:
        while times and times[0] <= now - self.window:
            times.popleft()
        return times
