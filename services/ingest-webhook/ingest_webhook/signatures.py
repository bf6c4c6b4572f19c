"""One verifier per signature scheme, each as its publisher documents it, on the body bytes as received.

Comparisons are constant-time (`hmac.compare_digest`); every secret of the source is tried, so a rotated-in
secret works beside the old one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class VerificationError(Exception):
    """`reason` is a metric label: missing_header, malformed_header, timestamp, signature."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Verified:
    delivery_id: str | None  # None when the scheme signs no id (Stripe: the id is in the body)
    timestamp: int | None  # the signed unix time, if the scheme has one
    # what replays are recognised by and event ids derive from, when it is not the delivery id: GitHub signs no
    # id, so the id in its header could be changed by anyone replaying a captured body
    dedup_id: str | None = None


def secret_key(scheme: str, secret: str) -> bytes:
    """The HMAC key of a secret: Standard Webhooks secrets are `whsec_<base64>`; GitHub and Stripe use the
    secret's text itself (Stripe's also starts with `whsec_`, but is not decoded)."""
    if scheme == "standard-webhooks":
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ValueError("a standard-webhooks secret must be whsec_<base64>") from None
    return secret.encode()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise VerificationError("missing_header", f"missing header {name}")
    return value


def _check_time(timestamp: str, now: float, tolerance: int) -> int:
    try:
        ts = int(timestamp)
    except ValueError:
        raise VerificationError("malformed_header", "the signature timestamp is not a unix time") from None
    if abs(now - ts) > tolerance:
        raise VerificationError("timestamp", f"the signature timestamp is more than {tolerance} s from now")
    return ts


def _matches(expected: list[bytes], offered: list[bytes]) -> bool:
    # every pair is compared, so the time taken does not tell which secret or which signature was close
    found = False
    for e in expected:
        for o in offered:
            found |= hmac.compare_digest(e, o)
    return found


def verify_standard(headers: Mapping[str, str], body: bytes, keys: tuple[bytes, ...], tolerance: int,
                    now: float) -> Verified:
    """Standard Webhooks (and Svix): `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, space-separated."""
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    offered = [sig[3:].encode() for sig in _header(headers, "webhook-signature").split() if sig.startswith("v1,")]
    ts = _check_time(timestamp, now, tolerance)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = [base64.b64encode(hmac.digest(k, signed, hashlib.sha256)) for k in keys]
    if not offered or not _matches(expected, offered):
        raise VerificationError("signature", "no signature matches")
    return Verified(msg_id, ts)


def verify_github(headers: Mapping[str, str], body: bytes, keys: tuple[bytes, ...], tolerance: int,
                  now: float) -> Verified:
    """GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of body>`. GitHub signs neither an id nor a time,
    so a captured delivery verifies for ever: replays are recognised by the body's HMAC under the source's first
    secret (the same whichever listed secret the sender used), kept for the source's dedup window of days.
    `X-GitHub-Delivery` is recorded as the delivery id but decides nothing."""
    signature = _header(headers, "x-hub-signature-256")
    delivery = _header(headers, "x-github-delivery")
    if not signature.startswith("sha256="):
        raise VerificationError("malformed_header", "X-Hub-Signature-256 must start with sha256=")
    expected = [hmac.new(k, body, hashlib.sha256).hexdigest().encode() for k in keys]
    if not _matches(expected, [signature[7:].lower().encode()]):
        raise VerificationError("signature", "no signature matches")
    return Verified(delivery, None, "sha256:" + expected[0].decode())


def verify_stripe(headers: Mapping[str, str], body: bytes, keys: tuple[bytes, ...], tolerance: int,
                  now: float) -> Verified:
    """Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` (several v1 during a rotation)."""
    timestamp, offered = None, []
    for item in _header(headers, "stripe-signature").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            offered.append(value.lower().encode())
    if timestamp is None or not offered:
        raise VerificationError("malformed_header", "Stripe-Signature needs t= and v1=")
    ts = _check_time(timestamp, now, tolerance)
    signed = f"{timestamp}.".encode() + body
    expected = [hmac.new(k, signed, hashlib.sha256).hexdigest().encode() for k in keys]
    if not _matches(expected, offered):
        raise VerificationError("signature", "no signature matches")
    return Verified(None, ts)


Verifier = Callable[[Mapping[str, str], bytes, tuple[bytes, ...], int, float], Verified]
SCHEMES: dict[str, Verifier] = {
    "standard-webhooks": verify_standard,
    "github": verify_github,
    "stripe": verify_stripe,
}
