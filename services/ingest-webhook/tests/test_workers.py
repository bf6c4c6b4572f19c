"""`python -m ingest_webhook` with several worker processes: connections reach every worker, and any worker's
/metrics counts the requests of all of them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
from platform_common.testing import drop_topics, free_port, wait_http
from prometheus_client.parser import text_string_to_metric_families

from ingest_webhook.settings import IngestSettings


def accepted(metrics: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(metrics) if f.name == "ingest_requests"
               for s in f.samples if s.name == "ingest_requests_total" and s.labels["outcome"] == "accepted")


def test_two_workers_share_connections_and_report_one_sum(sign, secrets, tmp_path):
    port, topic = free_port(), f"events.raw.v1.test-workers-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **secrets, "INGEST_PORT": str(port), "INGEST_HOST": "127.0.0.1", "INGEST_TOPIC": topic,
           "INGEST_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    service = subprocess.Popen([sys.executable, "-m", "ingest_webhook"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", 90, service)
        for _ in range(24):
            body = '{"stream": "s1", "text": "hello", "metrics": {"x": 1}}'
            with httpx.Client(base_url=url, timeout=10) as client:  # a new connection each time
                answer = client.post("/webhooks/demo", content=body,
                                     headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
                assert answer.status_code == 202, answer.text
        # every worker keeps its counters in a file of its own: two files = both workers took connections
        assert len(list(tmp_path.glob("counter_*.db"))) == 2
        for _ in range(4):  # whichever worker answers the scrape reports both workers' requests
            with httpx.Client(base_url=url, timeout=10) as client:
                assert accepted(client.get("/metrics").text) == 24
    finally:
        service.terminate()
        _, err = service.communicate(timeout=30)
        drop_topics(IngestSettings(), [topic])
    assert "Traceback" not in err.decode(), err.decode()[-2000:]
