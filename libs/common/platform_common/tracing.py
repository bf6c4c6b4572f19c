"""OpenTelemetry set-up and W3C trace context carried in Kafka headers, so one trace follows an event."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import orjson
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import SpanKind

from .settings import CommonSettings

Headers = Sequence[tuple[str, bytes]]


def _iso(ns: int | None) -> str | None:
    return ns_to_iso_str(ns) if ns is not None else None


def _context(ctx: trace.SpanContext) -> dict[str, str]:
    return {"trace_id": f"0x{ctx.trace_id:032x}", "span_id": f"0x{ctx.span_id:016x}",
            "trace_state": repr(ctx.trace_state)}


def span_record(span: ReadableSpan, resource: dict) -> dict:
    """The fields and shape of the SDK's `ReadableSpan.to_json`, built without its per-span resource dump."""
    status = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    return {
        "name": span.name,
        "context": _context(span.context) if span.context else None,
        "kind": str(span.kind),
        "parent_id": f"0x{span.parent.span_id:016x}" if span.parent else None,
        "start_time": _iso(span.start_time),
        "end_time": _iso(span.end_time),
        "status": status,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "timestamp": _iso(e.timestamp), "attributes": dict(e.attributes or {})}
                   for e in span.events],
        "links": [{"context": _context(link.context), "attributes": dict(link.attributes or {})}
                  for link in span.links],
        "resource": resource,
    }


class JsonLinesSpanExporter(SpanExporter):
    """Writes each finished span as one JSON line; the default when no OTLP endpoint is configured.

    orjson and a resource serialised once per provider: the SDK's `to_json` cost more than the span itself on
    the intake's hot path (a third of the span exporter thread was the resource's JSON, re-made for every span).
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._lock = threading.Lock()
        self._resources: dict[int, dict] = {}

    def _resource(self, span: ReadableSpan) -> dict:
        key = id(span.resource)
        if key not in self._resources:
            self._resources[key] = {"attributes": dict(span.resource.attributes),
                                    "schema_url": span.resource.schema_url}
        return self._resources[key]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join(orjson.dumps(span_record(span, self._resource(span)), default=str,
                                      option=orjson.OPT_APPEND_NEWLINE) for span in spans)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def setup_tracing(settings: CommonSettings) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* variables itself
    else:
        exporter = JsonLinesSpanExporter(spans_file(settings))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    return provider


def spans_file(settings: CommonSettings) -> Path:
    return settings.data_dir / "spans" / f"{settings.service_name}.jsonl"


class _HeaderSetter:
    def set(self, carrier: list, key: str, value: str) -> None:
        carrier.append((key, value.encode()))


class _HeaderGetter:
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = [v.decode() for k, v in carrier or () if k == key and v is not None]
        return found or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier or ()]


def inject_headers(headers: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    """Adds `traceparent`/`tracestate` of the current span to Kafka headers."""
    headers = [h for h in headers or [] if h[0] not in ("traceparent", "tracestate")]
    propagate.inject(headers, setter=_HeaderSetter())
    return headers


def extract_context(headers: Headers | None) -> context.Context:
    return propagate.extract(headers or [], getter=_HeaderGetter())


# a proxy that follows whatever provider setup_tracing installs later; building a tracer per span cost more
# than the span itself on hot paths
_TRACER = trace.get_tracer("platform")


def tracer() -> trace.Tracer:
    return _TRACER


@contextmanager
def publish_span(topic: str, key: str | None = None) -> Iterator[trace.Span]:
    """A PRODUCER span named after the messaging semantic conventions (`send <topic>`)."""
    with tracer().start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes={
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        **({"messaging.kafka.message.key": key} if key else {}),
    }) as span:
        yield span


@contextmanager
def process_span(topic: str, group: str, headers: Headers | None, partition: int | None = None,
                 offset: int | None = None) -> Iterator[trace.Span]:
    """A CONSUMER span (`process <topic>`) that continues the trace found in the record's headers."""
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    with tracer().start_as_current_span(f"process {topic}", context=extract_context(headers),
                                        kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span
