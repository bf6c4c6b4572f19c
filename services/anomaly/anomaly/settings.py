"""Settings of the anomaly service (env vars ANOMALY_*, plus the shared ones of CommonSettings)."""

from platform_common.kafka import ANOMALIES, ENRICHED
from platform_common.settings import CommonSettings
from platform_common.stream import Guarantee


class AnomalySettings(CommonSettings):
    service_name: str = "anomaly"
    anomaly_port: int = 8002
    anomaly_source_topic: str = ENRICHED
    anomaly_alert_topic: str = ANOMALIES
    # the consumer group, and with the instance the transactional id (keep the instance stable across restarts of
    # one replica, e.g. a StatefulSet pod name, so a restart fences its killed predecessor at once; default: host)
    anomaly_app_id: str = "anomaly"
    anomaly_instance_id: str | None = None
    # exactly_once: alerts, dead letters and consumed offsets in one Kafka transaction; at_least_once: offsets after
    # the alerts. Either way the detector state is saved in PostgreSQL after the commit
    anomaly_processing_guarantee: Guarantee = "exactly_once"
    # PostgreSQL schema holding model versions and detector state
    anomaly_db_schema: str = "anomaly"
    # a batch (and transaction) costs one model call and one state write per stream it touches, whatever its size:
    # large batches amortise those when the service is behind; `anomaly_batch_seconds` bounds the wait for a batch
    # to fill once its first record arrived
    anomaly_batch_size: int = 2000
    anomaly_batch_seconds: float = 0.5
    # a killed worker's partitions move to another after this long without heartbeats
    anomaly_session_timeout_s: float = 10.0
    anomaly_train_workers: int = 1
    # JSON object overriding DetectorConfig fields, e.g. {"warmup": 300}; one configuration for every stream
    anomaly_detector: str = "{}"
