"""`python -m ingest_webhook` with several worker processes: connections reach every worker, and any worker's
/metrics counts the requests of all of them."""

from __future__ import annotations

import uuid

import httpx

from ingest_webhook.settings import IngestSettings
from platform_common.testing import ServiceProcess, drop_topics, free_port, metric_sum


def test_two_workers_share_connections_and_report_one_sum(sign, secrets, tmp_path):
    port, topic = free_port(), f"events.raw.v1.test-workers-{uuid.uuid4().hex[:8]}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    service = ServiceProcess("ingest-webhook", "ingest_webhook", port, {
        **secrets, "INGEST_PORT": str(port), "INGEST_HOST": "127.0.0.1", "INGEST_TOPIC": topic,
        "INGEST_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "LOG_LEVEL": "WARNING"}, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        service.start().wait_ready(90)
        for _ in range(24):
            body = '{"stream": "s1", "text": "hello", "metrics": {"x": 1}}'
            with httpx.Client(base_url=url, timeout=10) as client:  # a new connection each time
                answer = client.post("/webhooks/demo", content=body,
                                     headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
                assert answer.status_code == 202, answer.text
        # every worker keeps its counters in a file of its own: two files = both workers took connections
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2
        for _ in range(4):  # whichever worker answers the scrape reports both workers' requests
            with httpx.Client(base_url=url, timeout=10) as client:
                assert metric_sum(client.get("/metrics").text, "ingest_requests_total", outcome="accepted") == 24
    finally:
        service.stop()
        drop_topics(IngestSettings(), [topic])
    log = service.log_path.read_text()
    assert "Traceback" not in log, log[-2000:]
