"""Settings every service shares, read from the environment; the one place for their defaults."""

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]


class CommonSettings(BaseSettings):
    """Services subclass this and add their own fields, named with the service as prefix
    (e.g. `enrich_backend` is read from ENRICH_BACKEND)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = "platform"
    kafka_bootstrap_servers: str = "localhost:9092"
    schema_registry_url: str = "http://localhost:8081/apis/ccompat/v7"
    database_url: str = "postgresql://platform:platform@localhost:5432/platform"
    redis_url: str = "redis://localhost:6379/0"
    # the same variable as deploy/local/stack.py, so spans and service state land beside the stack's data
    data_dir: Path = Field(REPO_ROOT / ".data", validation_alias=AliasChoices("STACK_DATA_DIR", "DATA_DIR"))
    otel_exporter_otlp_endpoint: str | None = None
    log_level: str = "INFO"
    kafka_partitions: int = 3
    consumer_max_attempts: int = 3
