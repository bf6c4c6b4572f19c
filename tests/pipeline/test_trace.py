"""The whole pipeline as processes: a signed webhook with a spike becomes a PagerDuty trigger, in one trace.

ingest-webhook -> events.raw -> enrich -> events.enriched -> anomaly -> anomalies -> notify -> local PagerDuty.
Every service runs as `python -m <package>` on per-run topics, and writes its spans to <data dir>/spans/*.jsonl.
"""

import json
import time
from pathlib import Path

import httpx
import pytest
from support.platform import SPIKE_AT, Sender, metric_payloads

SERVICES = ("ingest-webhook", "enrich", "anomaly", "notify")


def load_spans(folder: Path) -> list[dict]:
    spans = []
    for path in folder.glob("*.jsonl"):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return spans


def service_of(span: dict) -> str:
    return span["resource"]["attributes"]["service.name"]


@pytest.mark.slow
def test_a_spike_becomes_one_pagerduty_trigger_in_one_trace(start_platform, run_id):
    platform = start_platform(SERVICES)
    sender = Sender(platform.ports["ingest-webhook"])
    payloads = metric_payloads(run_id, streams=1, points=SPIKE_AT + 60, spike_at=SPIKE_AT)
    with httpx.Client(timeout=10) as client:
        for payload in payloads:
            assert sender.post(client, payload, attempts=1) == 202, sender.refused

    deadline = time.monotonic() + 90
    triggers = []
    while not triggers and time.monotonic() < deadline:
        triggers = [e for e in platform.received() if e.get("event_action") == "trigger"]
        time.sleep(1)
    assert len(triggers) == 1, platform.logs()
    assert f"chaos-{run_id}-0" in json.dumps(triggers[0])

    time.sleep(2)  # span processors flush every 0.5 s
    spans = load_spans(platform.spans_dir)
    deliveries = [s for s in spans if service_of(s) == "notify" and s["name"].startswith("process ")]
    assert deliveries, "notify recorded no span for the alert"
    trace_id = deliveries[0]["context"]["trace_id"]
    chain = [s for s in spans if s["context"]["trace_id"] == trace_id]
    services = {service_of(s) for s in chain}
    assert set(SERVICES) <= services, f"the trace misses {set(SERVICES) - services}"
    names = {s["name"] for s in chain}
    assert {"POST /webhooks/{source}", "deliver oncall-pagerduty"} <= names, names
    by_id = {s["context"]["span_id"]: s for s in chain}
    roots = [s for s in chain if not s.get("parent_id")]
    assert len(roots) == 1 and service_of(roots[0]) == "ingest-webhook"
    for span in chain:
        if span.get("parent_id"):
            assert span["parent_id"] in by_id, f"{span['name']} has a parent outside the trace"
        if span["kind"] == "SpanKind.CONSUMER":
            parent = by_id[span["parent_id"]]
            assert parent["kind"] == "SpanKind.PRODUCER" and parent["name"].startswith("send ")
            assert span["attributes"]["messaging.system"] == "kafka"
