"""The reports service's settings: the shared ones plus `REPORTS_*` variables."""

from pathlib import Path

from platform_common.kafka import ANOMALIES, DOCUMENTS, ENRICHED, RAW, REPORTS
from platform_common.settings import CommonSettings

HERE = Path(__file__).resolve().parent


class ReportsSettings(CommonSettings):
    service_name: str = "reports"
    reports_port: int = 8004
    # report definitions, schedules and portal users
    reports_config: Path = HERE.parent / "reports.yaml"
    # PostgreSQL schema holding the projections and the reports (tests use their own)
    reports_db_schema: str = "reports"
    reports_raw_topic: str = RAW
    reports_enriched_topic: str = ENRICHED
    reports_anomalies_topic: str = ANOMALIES
    reports_topic: str = REPORTS
    # each report is also published as a document, so rag indexes it as context for later reports
    reports_documents_topic: str = DOCUMENTS
    reports_group: str = "reports"
    reports_rag_url: str = "http://localhost:8003"
    reports_rag_top_k: int = 4
    reports_llm_backend: str = "embedded"  # embedded or openai
    reports_llm_url: str | None = None
    reports_llm_model: str | None = None
    reports_llm_api_key: str | None = None
    reports_llm_max_tokens: int = 96
    # sentences with ungrounded numbers get this many rewrites in all before they are removed
    reports_max_regenerations: int = 2
    # absolute URL of the portal, for links in emails, Slack messages and reports.v1
    reports_portal_url: str = "http://localhost:8004"
    # signs session cookies; set it in production (a random one per process signs everybody out on restart)
    reports_session_secret: str | None = None
    reports_smtp_host: str = "localhost"
    reports_smtp_port: int = 25
    reports_smtp_sender: str = "reports@platform.local"
    reports_slack_webhook_url: str | None = None
    reports_schedule_interval_seconds: float = 30.0
