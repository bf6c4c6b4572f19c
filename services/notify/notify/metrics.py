"""notify's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter("notify_deliveries_total", "Alert deliveries by receiver and final outcome",
                     ["receiver", "outcome"])
ATTEMPTS = Counter("notify_delivery_attempts_total", "HTTP attempts by receiver and outcome", ["receiver", "outcome"])
RETRIES = Counter("notify_delivery_retries_total", "Attempts that will be retried", ["receiver"])
LATENCY = Histogram("notify_delivery_latency_seconds", "From the alert's creation to its delivery", ["receiver"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
CIRCUIT_OPEN = Gauge("notify_circuit_open", "1 while the receiver's circuit breaker is open", ["receiver"])
QUEUE_DEPTH = Gauge("notify_queue_depth", "Deliveries stored and not yet finished")
