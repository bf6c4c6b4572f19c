"""Settings of the anomaly service (env vars ANOMALY_*, plus the shared ones of CommonSettings)."""

from platform_common.kafka import ANOMALIES, ENRICHED
from platform_common.settings import CommonSettings


class AnomalySettings(CommonSettings):
    service_name: str = "anomaly"
    anomaly_port: int = 8002
    anomaly_source_topic: str = ENRICHED
    anomaly_alert_topic: str = ANOMALIES
    # the Faust app id is also the consumer group
    anomaly_app_id: str = "anomaly"
    # PostgreSQL schema holding model versions and detector state
    anomaly_db_schema: str = "anomaly"
    # a batch costs one model call and one state write per stream it touches, whatever its size: large batches
    # amortise those when the service is behind; `anomaly_batch_seconds` bounds the wait when it is not
    anomaly_batch_size: int = 2000
    anomaly_batch_seconds: float = 0.5
    # a killed worker's partitions move to another after this long without heartbeats
    anomaly_session_timeout_s: float = 10.0
    anomaly_train_workers: int = 1
    # JSON object overriding DetectorConfig fields, e.g. {"warmup": 300}; one configuration for every stream
    anomaly_detector: str = "{}"
