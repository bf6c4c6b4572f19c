"""The whole pipeline as processes: a signed webhook with a spike becomes a PagerDuty trigger, in one trace.

ingest-webhook -> events.raw -> enrich -> events.enriched -> anomaly -> anomalies -> notify -> local PagerDuty.
Every service runs as `python -m <package>` on per-run topics, and writes its spans to <data dir>/spans/*.jsonl.
"""

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook
from support.services import ServiceProcess, free_port

SECRET = "whsec_ZGVtby1kZXZlbG9wbWVudC1zZWNyZXQtMzJieXRlcyE="
ROUTING_KEY = "testroutingkey0123456789abcdef01"
SERVICES = ("ingest-webhook", "enrich", "anomaly", "notify")


@pytest.fixture
def pipeline(tmp_path, run_id):
    topics = {t: f"{t}.{run_id}" for t in ("events.raw.v1", "events.enriched.v1", "anomalies.v1",
                                             "notifications.v1")}
    ports = {name: free_port() for name in (*SERVICES, "receivers")}
    common = {"STACK_DATA_DIR": str(tmp_path), "LOG_LEVEL": "INFO"}
    receivers = ServiceProcess("receivers", "notify.dev_receivers", ports["receivers"], common, tmp_path,
                               args=("--port", str(ports["receivers"])), ready_path="/_received/pagerduty")
    envs = {
        "ingest-webhook": {"INGEST_PORT": ports["ingest-webhook"], "INGEST_TOPIC": topics["events.raw.v1"],
                           "WEBHOOK_SECRET_DEMO": SECRET, "INGEST_DEV_SECRETS": "1"},
        "enrich": {"ENRICH_PORT": ports["enrich"], "ENRICH_APP_ID": f"enrich-{run_id}",
                   "ENRICH_INPUT_TOPIC": topics["events.raw.v1"], "ENRICH_OUTPUT_TOPIC": topics["events.enriched.v1"]},
        "anomaly": {"ANOMALY_PORT": ports["anomaly"], "ANOMALY_APP_ID": f"anomaly-{run_id}",
                    "ANOMALY_SOURCE_TOPIC": topics["events.enriched.v1"], "ANOMALY_ALERT_TOPIC": topics["anomalies.v1"],
                    "ANOMALY_DB_SCHEMA": f"anomaly_{run_id}"},
        "notify": {"NOTIFY_PORT": ports["notify"], "NOTIFY_TOPICS": json.dumps([topics["anomalies.v1"]]),
                   "NOTIFY_NOTIFICATIONS_TOPIC": topics["notifications.v1"], "NOTIFY_GROUP_ID": f"notify-{run_id}",
                   "NOTIFY_DB_SCHEMA": f"notify_{run_id}",
                   "NOTIFY_PAGERDUTY_URL": f"http://127.0.0.1:{ports['receivers']}/v2/enqueue",
                   "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
                   "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{ports['receivers']}/slack/alerts"},
    }
    modules = {"ingest-webhook": "ingest_webhook", "enrich": "enrich", "anomaly": "anomaly", "notify": "notify"}
    procs = [ServiceProcess(name, modules[name], ports[name], {**common, **{k: str(v) for k, v in envs[name].items()}},
                            tmp_path) for name in SERVICES]
    try:
        for p in [receivers, *procs]:
            p.start()
        for p in [receivers, *procs]:
            p.wait_ready()
        yield {"ports": ports, "spans": tmp_path / "spans", "procs": procs}
    finally:
        for p in [*procs, receivers]:
            p.stop()


def post(client: httpx.Client, port: int, payload: dict) -> httpx.Response:
    body = json.dumps(payload)
    now = datetime.now(timezone.utc)
    headers = {"content-type": "application/json", "webhook-id": payload["id"],
               "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(SECRET).sign(payload["id"], now, body)}
    return client.post(f"http://127.0.0.1:{port}/webhooks/demo", content=body, headers=headers)


def load_spans(folder: Path) -> list[dict]:
    spans = []
    for path in folder.glob("*.jsonl"):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return spans


@pytest.mark.slow
def test_a_spike_becomes_one_pagerduty_trigger_in_one_trace(pipeline, run_id):
    ports = pipeline["ports"]
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stream = f"pipeline-{run_id}"
    values = [50.0 + (i % 7) * 0.5 for i in range(300)] + [500.0] * 3 + [50.0 + (i % 7) * 0.5 for i in range(60)]
    with httpx.Client(timeout=10) as client:
        for i, value in enumerate(values):
            answer = post(client, ports["ingest-webhook"], {
                "id": f"{stream}-{i}", "stream": stream, "type": "reading", "metrics": {"load": value},
                "occurred_at": (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")})
            assert answer.status_code == 202, answer.text

        deadline = time.monotonic() + 90
        triggers = []
        while not triggers and time.monotonic() < deadline:
            got = client.get(f"http://127.0.0.1:{ports['receivers']}/_received/pagerduty").json()
            triggers = [e for e in got if e.get("event_action") == "trigger"]
            time.sleep(1)
    assert len(triggers) == 1, [p.tail() for p in pipeline["procs"]]
    assert stream in json.dumps(triggers[0])

    time.sleep(2)  # span processors flush every 0.5 s
    spans = load_spans(pipeline["spans"])
    deliveries = [s for s in spans if s["resource"]["attributes"]["service.name"] == "notify"
                  and s["name"].startswith("process ")]
    assert deliveries, "notify recorded no span for the alert"
    trace_id = deliveries[0]["context"]["trace_id"]
    chain = [s for s in spans if s["context"]["trace_id"] == trace_id]
    services = {s["resource"]["attributes"]["service.name"] for s in chain}
    assert set(SERVICES) <= services, f"the trace misses {set(SERVICES) - services}"
    by_id = {s["context"]["span_id"]: s for s in chain}
    roots = [s for s in chain if not s.get("parent_id")]
    assert len(roots) == 1 and roots[0]["resource"]["attributes"]["service.name"] == "ingest-webhook"
    for span in chain:
        if span.get("parent_id"):
            assert span["parent_id"] in by_id, f"{span['name']} has a parent outside the trace"
        if span["kind"] == "SpanKind.CONSUMER":
            parent = by_id[span["parent_id"]]
            assert parent["kind"] == "SpanKind.PRODUCER" and parent["name"].startswith("send ")
            assert span["attributes"]["messaging.system"] == "kafka"
