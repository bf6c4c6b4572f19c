"""OpenTelemetry set-up and W3C trace context carried in Kafka headers, so one trace follows an event."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from .settings import CommonSettings

Headers = Sequence[tuple[str, bytes]]


def _iso(ns: int | None) -> str | None:
    # the SDK's ns_to_iso_str format, without strftime (the slowest part of writing a span)
    if ns is None:
        return None
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).isoformat()[:19] + f".{ns // 1000 % 1_000_000:06d}Z"


def _context(ctx: trace.SpanContext) -> dict[str, str]:
    return {"trace_id": f"0x{ctx.trace_id:032x}", "span_id": f"0x{ctx.span_id:016x}",
            "trace_state": repr(ctx.trace_state)}


def _plain(attributes: Mapping | None) -> dict:
    # BoundedAttributes keeps its items in a dict; copying that is far cheaper than iterating the mapping
    return dict(getattr(attributes, "_dict", None) or attributes or {})


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
        "attributes": _plain(span.attributes),
        "events": [{"name": e.name, "timestamp": _iso(e.timestamp), "attributes": _plain(e.attributes)}
                   for e in span.events],
        "links": [{"context": _context(link.context), "attributes": _plain(link.attributes)}
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


class _HeaderSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode()))


class _HeaderGetter(Getter[Headers]):
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
def current_span(name: str, kind: SpanKind, attributes: dict, parent: context.Context | None = None
                 ) -> Iterator[trace.Span]:
    """`start_as_current_span` without its wrapper layers, which cost a quarter of a span on per-event paths; like
    it, records an exception that leaves the block and sets the span's status to ERROR."""
    span = tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    except Exception as e:
        if span.is_recording():
            span.record_exception(e)
            span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
        raise
    finally:
        context.detach(token)
        span.end()


@contextmanager
def publish_span(topic: str, key: str | None = None) -> Iterator[trace.Span]:
    """A PRODUCER span named after the messaging semantic conventions (`send <topic>`)."""
    attributes = {"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.destination.name": topic}
    if key:
        attributes["messaging.kafka.message.key"] = key
    with current_span(f"send {topic}", SpanKind.PRODUCER, attributes) as span:
        yield span


@contextmanager
def process_span(topic: str, group: str, headers: Headers | None, partition: int | None = None,
                 offset: int | None = None) -> Iterator[trace.Span]:
    """A CONSUMER span (`process <topic>`) that continues the trace found in the record's headers."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    with current_span(f"process {topic}", SpanKind.CONSUMER, attributes, extract_context(headers)) as span:
        yield span
