"""With the broker down no request gets 202 and every answer comes within the bound; once the broker is back,
posting resumes without restarting the service, and a delivery refused with 503 is published when retried
(its replay claim was released, not left to drop the retry as a replay).

The broker is a PRIVATE one (tests/support/private_kafka.py) that this test kills and restarts.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from ingest_webhook.app import create_app
from ingest_webhook.settings import IngestSettings


def test_no_202_while_the_broker_is_down_and_recovery_without_restart(private_kafka, serve, sign, secrets, sources,
                                                                        unique):
    settings = IngestSettings(service_name="ingest-webhook-test",
                              kafka_bootstrap_servers=private_kafka.bootstrap_servers,
                              ingest_topic=f"events.raw.v1.outage-{unique}", ingest_publish_timeout=2.0)
    secret = secrets["WEBHOOK_SECRET_DEMO"]
    try:
        _outage_and_recovery(private_kafka, serve, sign, secret, settings, sources)
    finally:  # the topic went with the private broker; its subject is in the shared registry
        for suffix in ("", "?permanent=true"):
            httpx.delete(f"{settings.schema_registry_url}/subjects/{settings.ingest_topic}-value{suffix}")


def _outage_and_recovery(private_kafka, serve, sign, secret, settings, sources):
    def post(client, body, headers=None):
        started = time.monotonic()
        r = client.post("/webhooks/demo", content=body, headers=headers or sign.standard(secret, body))
        return r, time.monotonic() - started

    with serve(create_app(settings, sources)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        body = json.dumps({"stream": "s", "text": "before", "metrics": {"v": 1}})
        assert post(client, body)[0].status_code == 202

        private_kafka.stop()
        refused = []
        for i in range(4):
            body = json.dumps({"stream": f"s{i}", "text": "during", "metrics": {"v": i}})
            headers = sign.standard(secret, body)
            r, took = post(client, body, headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "kafka_unavailable" and r.headers["retry-after"]
            assert took < 3.0, f"503 took {took:.1f} s"
            refused.append((body, headers))

        # concurrent copies of one delivery: one publishes, the others wait for it; all within the bound
        body = json.dumps({"stream": "c", "text": "concurrent", "metrics": {"v": 9}})
        headers = sign.standard(secret, body)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: post(client, body, headers), range(3)))
        assert [r.status_code for r, _ in answers] == [503] * 3, [r.text for r, _ in answers]
        assert max(took for _, took in answers) < 3.0
        refused.append((body, headers))

        private_kafka.start()
        deadline = time.monotonic() + 60
        while True:  # the producer reconnects by itself; the same process keeps serving
            body = json.dumps({"stream": "s", "text": "after", "metrics": {"v": 2}, "id": str(uuid.uuid4())})
            r, _ = post(client, body)
            if r.status_code == 202:
                break
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, "posting did not resume within 60 s of the broker's return"
            time.sleep(1)

        # the refused deliveries, retried by their sender with the same id and signature, are published now
        for body, headers in refused:
            r, _ = post(client, body, headers)
            assert r.status_code == 202, r.text
