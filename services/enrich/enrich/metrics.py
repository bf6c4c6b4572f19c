"""Prometheus metrics of the enrichment stream and its model calls."""

from prometheus_client import Counter, Histogram

EVENTS = Counter("enrich_events_total", "Events handled, by outcome (enriched, passed_through, dead_lettered)",
                 ["outcome"])
STREAM_BATCH = Histogram("enrich_stream_batch_size", "Records per stream batch",
                         buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000))
MODEL_BATCH = Histogram("enrich_model_batch_size", "Texts per model request", ["task", "backend"],
                        buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000))
MODEL_SECONDS = Histogram("enrich_model_latency_seconds", "Model request latency", ["task", "backend"],
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
MODEL_ERRORS = Counter("enrich_model_errors_total", "Failed model requests", ["task", "backend", "kind"])
BREAKER_OPEN = Counter("enrich_circuit_opened_total", "Times a model's circuit breaker opened", ["task", "backend"])
