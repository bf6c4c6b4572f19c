"""notify's settings: the shared ones plus its own, read from NOTIFY_* environment variables."""

from pathlib import Path

from platform_common.kafka import ANOMALIES, NOTIFICATIONS
from platform_common.settings import CommonSettings

PACKAGE_DIR = Path(__file__).resolve().parent


class NotifySettings(CommonSettings):
    service_name: str = "notify"
    # loopback unless configured, like rag and reports: a container or pod sets 0.0.0.0 behind its network policy
    notify_host: str = "127.0.0.1"
    notify_port: int = 8005
    # the longest silence the API accepts (seconds; 7 days): longer ones are refused, not shortened
    notify_silence_max_duration: float = 7 * 86400
    # request bodies over this many bytes are refused with 413 (a silence is well under 64 KiB)
    notify_max_body_bytes: int = 65536
    notify_routes_file: Path = PACKAGE_DIR.parent / "routes.yaml"
    # alert topics to consume; they all carry the anomalies.v1 schema
    notify_topics: list[str] = [ANOMALIES]
    notify_notifications_topic: str = NOTIFICATIONS
    notify_group_id: str = "notify"
    # PostgreSQL schema holding notify's tables (tests use one per run)
    notify_db_schema: str = "notify"
    notify_pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    notify_portal_url: str = "http://localhost:8004"
    notify_trace_url: str = "http://localhost:16686/trace/{trace_id}"
    notify_http_timeout: float = 10.0
    notify_max_attempts: int = 6
    notify_backoff_initial: float = 0.5
    notify_backoff_max: float = 30.0
    notify_circuit_threshold: int = 5
    notify_circuit_ttl: float = 30.0
    notify_poll_interval: float = 0.1
