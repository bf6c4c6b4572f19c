"""A source's JSONata expression, compiled once, from its payload to the canonical event's fields."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
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
            parsed = parsed.replace(tzinfo=timezone.utc)
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
                 signed_at: int | None, raw_payload: str, headers: dict[str, str]) -> dict:
        """The canonical event (the Avro record of events.raw.v1) of one verified payload."""
        m = self.evaluate(payload, {"headers": headers, "source": source, "delivery_id": delivery_id})
        delivery_id = delivery_id or _text(m.get("delivery_id"), "delivery_id", True)
        occurred = m.get("occurred_at")
        return {
            "event_id": _text(m.get("event_id"), "event_id", False)
            or str(uuid.uuid5(EVENT_NAMESPACE, f"{source}:{delivery_id}")),
            "delivery_id": delivery_id,
            "source": source,
            "type": _text(m.get("type"), "type", True),
            "stream_id": _text(m.get("stream_id"), "stream_id", True),
            "tenant": _text(m.get("tenant"), "tenant", False) or "default",
            "occurred_at": _millis(occurred, "occurred_at") if occurred is not None
            else (signed_at * 1000 if signed_at else received_at),
            "received_at": received_at,
            "text": _string_map(m.get("text"), "text"),
            "metrics": _metrics(m.get("metrics")),
            "attributes": _string_map(m.get("attributes"), "attributes"),
            "raw_payload": raw_payload,
        }
