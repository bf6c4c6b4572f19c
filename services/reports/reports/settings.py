"""The reports service's settings: the shared ones plus `REPORTS_*` variables."""

import socket
from pathlib import Path

from pydantic import Field, SecretStr

from platform_common.kafka import ANOMALIES, ENRICHED, RAW, REPORTS
from platform_common.settings import CommonSettings

HERE = Path(__file__).resolve().parent


class ReportsSettings(CommonSettings):
    service_name: str = "reports"
    reports_port: int = 8004
    # loopback unless configured: a container or pod sets 0.0.0.0 behind its network policy
    reports_host: str = "127.0.0.1"
    # report definitions and schedules
    reports_config: Path = HERE.parent / "reports.yaml"
    # the portal's users (YAML `users: [{username, tenant, password_hash}]`), e.g. a mounted Secret; none without it
    reports_users_file: Path | None = None
    # PostgreSQL schema holding the projections and the reports (tests use their own)
    reports_db_schema: str = "reports"
    reports_raw_topic: str = RAW
    reports_enriched_topic: str = ENRICHED
    reports_anomalies_topic: str = ANOMALIES
    reports_topic: str = REPORTS
    reports_group: str = "reports"
    reports_rag_url: str = "http://localhost:8003"
    reports_rag_top_k: int = 4
    # rag API keys (read role) by tenant, as JSON {"tenant": "pk_..."}: context for a tenant's report is asked
    # with that tenant's own key, so it can only hold that tenant's and the shared documents
    reports_rag_api_keys: dict[str, SecretStr] = {}
    reports_llm_backend: str = "embedded"  # embedded or openai
    reports_llm_runtime: str = "llama.cpp"  # the embedded backend's runtime: llama.cpp or transformers
    reports_llm_url: str | None = None
    reports_llm_model: str | None = None
    reports_llm_api_key: str | None = None
    reports_llm_max_tokens: int = 96
    # sentences with ungrounded numbers get this many rewrites in all before they are removed
    reports_max_regenerations: int = 2
    # absolute URL of the portal, for links in emails, Slack messages and reports.v1
    reports_portal_url: str = "http://localhost:8004"
    # portal sessions (server-side, in PostgreSQL) last this long; sign-out ends them at once
    reports_session_hours: float = 12.0
    # failed sign-ins allowed per client address and per user name within the window, then 429
    reports_login_failures_per_address: int = 20
    reports_login_failures_per_user: int = 5
    reports_login_window_seconds: float = 900.0
    reports_max_body_bytes: int = 64 * 1024
    reports_smtp_host: str = "localhost"
    reports_smtp_port: int = 25
    reports_smtp_sender: str = "reports@platform.local"
    reports_slack_webhook_url: str | None = None
    reports_schedule_interval_seconds: float = 30.0
    # a period is made once the projections hold every event published until its end plus this grace
    reports_grace_seconds: float = 300.0
    # at start, periods that ended this long ago at most and were never made are made (an outage's missed periods)
    reports_backfill_hours: float = 48.0
    # late events that change a made period's figures make a new version, until this long after the period's end
    reports_lateness_hours: float = 24.0
    # each step of a run (generate, publish, each delivery) is tried this often, backing off, then dead-lettered
    reports_max_attempts: int = 8
    reports_retry_base_seconds: float = 5.0
    reports_retry_max_seconds: float = 600.0
    # a run is driven by one replica: it holds a lease this long, renewed at each step (another takes it after)
    reports_lease_seconds: float = 300.0
    # stable across restarts (a pod's name, a host's): a restarted replica resumes its own runs at once
    reports_instance_id: str = Field(default_factory=socket.gethostname)
