import pytest

from platform_common.kafka import ensure_topics


@pytest.fixture
async def topic(settings, run_id) -> str:
    """A fresh topic (and its DLQ) for one test; records carry the events.raw.v1 schema."""
    name = f"test.common.{run_id}"
    await ensure_topics(settings, [name])
    return name


@pytest.fixture(scope="session")
def spans():
    """The SDK tracer provider the services use, with an in-memory exporter beside its span file."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from platform_common.settings import CommonSettings
    from platform_common.tracing import setup_tracing

    provider = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):
        provider = setup_tracing(CommonSettings(service_name="tests"))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
