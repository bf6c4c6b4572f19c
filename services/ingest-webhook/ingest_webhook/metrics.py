"""The service's Prometheus metrics (the shared publisher adds kafka_publish_* for every record)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("ingest_requests_total", "Webhook requests by source and outcome", ["source", "outcome"])
VERIFICATION_FAILURES = Counter("ingest_verification_failures_total", "Refused signatures by source and reason",
                                ["source", "reason"])
PUBLISH_SECONDS = Histogram("ingest_publish_duration_seconds", "Encode, send and wait for Kafka's acknowledgement",
                            ["source", "outcome"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
KAFKA_ERRORS = Counter("ingest_kafka_errors_total", "Events Kafka did not take, by error", ["error"])
