"""A source's JSONata expression, compiled once, from its payload to the canonical event's fields."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from jsonata import Jsonata

# event ids derived from (source, delivery id) are stable, so a re-delivery after a lost answer keeps its id
EVENT_NAMESPACE = uuid.UUID("6f1c1a52-2f0e-4d4e-9a57-6a8f3f7d2b10")


class MappingError(Exception):
    """The payload cannot be turned into a canonical event (422); the message names the field."""


def _millis(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise MappingError(f"{field} must be ISO-8601 text or epoch milliseconds")
    if isinstance(value, (int, float)):
        if not -2**63 <= value < 2**63:
            raise MappingError(f"{field} is out of range")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise MappingError(f"{field} is not an ISO-8601 time: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    raise MappingError(f"{field} must be ISO-8601 text or epoch milliseconds")


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if field == "text" and isinstance(value, str):  # one text without a name is the event's body
        return {"body": value}
    if not isinstance(value, dict):
        raise MappingError(f"{field} must be an object")
    out = {}
    for k, v in value.items():
        if v is None:
            continue
        if field == "text" and not isinstance(v, (str, int, float)):
            raise MappingError(f"text.{k} must be text")
        out[str(k)] = _scalar_text(v)
    return out


def _metrics(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError("metrics must be an object of numbers")
    out = {}
    for k, v in value.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MappingError(f"metrics.{k} must be a number")
        try:
            out[str(k)] = float(v)
        except OverflowError:
            raise MappingError(f"metrics.{k} is out of range") from None
    return out


def _text(value: Any, field: str, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise MappingError(f"the mapping gives no {field}")
        return None
    if isinstance(value, (dict, list)):
        raise MappingError(f"{field} must be text")
    return _scalar_text(value)


@dataclasses.dataclass(frozen=True)
class TenantBinding:
    """Which tenant a source's events belong to: `fixed`, or the value of a signed `field` of the payload (a
    JSONata path) looked up in `allowed` (value -> tenant); a value outside it is refused, a missing one takes
    `absent` if set. The sender never names a tenant the operator did not bind to the source."""

    fixed: str | None = None
    field: str | None = None
    allowed: dict[str, str] = dataclasses.field(default_factory=dict)
    absent: str | None = None
    # `field` compiled by __post_init__ (not an argument, not compared, not shown)
    _expression: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.field is not None:
            compiled = Jsonata(self.field)
            compiled.set_validate_input(False)
            object.__setattr__(self, "_expression", compiled)

    def resolve(self, payload: Any) -> str:
        if self.fixed is not None:
            return self.fixed
        try:
            value = self._expression.evaluate(payload)
        except Exception:
            value = None
        if value is None or value == "":
            if self.absent is None:
                raise MappingError(f"the payload names no tenant ({self.field})")
            return self.absent
        if isinstance(value, (dict, list)) or _scalar_text(value) not in self.allowed:
            raise MappingError(f"{self.field} does not name a tenant this source is bound to")
        return self.allowed[_scalar_text(value)]


class Mapping:
    def __init__(self, expression: str):
        self.expression = Jsonata(expression)
        # the input comes from a JSON parser, so it is always of JSON types: skip jsonata's input walk
        self.expression.set_validate_input(False)

    def evaluate(self, payload: Any, bindings: dict[str, Any]) -> dict:
        try:
            result = self.expression.evaluate(payload, bindings)
        except Exception as e:  # a JSONata runtime error on this payload (e.g. arithmetic on text)
            raise MappingError(f"the mapping failed on this payload: {e}"[:300]) from None
        if not isinstance(result, dict):
            raise MappingError("the mapping did not produce an object")
        return result

    def to_event(self, payload: Any, *, source: str, delivery_id: str | None, received_at: int,
                 signed_at: int | None, raw_payload: str, headers: dict[str, str], tenant: TenantBinding,
                 default_stream_id: str, dedup_id: str | None = None) -> dict:
        """The canonical event (the Avro record of events.raw.v1) of one verified payload. `dedup_id`, when the
        scheme gives one, is what replays are recognised by and the derived event id comes from."""
        if not isinstance(payload, dict):  # every publisher sends an object; an array or a scalar is no event
            raise MappingError("the payload must be a JSON object")
        m = self.evaluate(payload, {"headers": headers, "source": source, "delivery_id": delivery_id})
        delivery_id = delivery_id or _text(m.get("delivery_id"), "delivery_id", True)
        occurred = m.get("occurred_at")
        return {
            "event_id": _text(m.get("event_id"), "event_id", False)
            or str(uuid.uuid5(EVENT_NAMESPACE, f"{source}:{dedup_id or delivery_id}")),
            "delivery_id": delivery_id,
            "source": source,
            "type": _text(m.get("type"), "type", True),
            # a valid event whose mapping finds no stream (a Stripe guest charge has no customer) goes to the
            # source's own stream rather than being refused: a refusal makes the publisher retry for days
            "stream_id": _text(m.get("stream_id"), "stream_id", False) or default_stream_id,
            "tenant": tenant.resolve(payload),
            "occurred_at": _millis(occurred, "occurred_at") if occurred is not None
            else (signed_at * 1000 if signed_at else received_at),
            "received_at": received_at,
            "text": _string_map(m.get("text"), "text"),
            "metrics": _metrics(m.get("metrics")),
            "attributes": _string_map(m.get("attributes"), "attributes"),
            "raw_payload": raw_payload,
        }
