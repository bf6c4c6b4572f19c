"""What every service does first: JSON logs and tracing for its name."""

from opentelemetry.sdk.trace import TracerProvider

from .logs import setup_logging
from .settings import CommonSettings
from .tracing import setup_tracing


def init_service(settings: CommonSettings) -> TracerProvider:
    setup_logging(settings.service_name, settings.log_level)
    return setup_tracing(settings)
