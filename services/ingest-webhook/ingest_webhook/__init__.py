"""Signed webhook intake: verify as received, map to the canonical event, publish to Kafka, answer after the ack."""
