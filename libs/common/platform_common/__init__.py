"""Shared plumbing of the platform's services: settings, Kafka + Avro, tracing, metrics, logging."""
