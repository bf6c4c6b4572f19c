"""Anomaly detection on the metrics of enriched events: per-stream LSTM autoencoders, calibrated thresholds,
alerts to anomalies.v1."""
