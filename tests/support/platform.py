"""The platform as `make run` starts it, but isolated for one test: per-run topics, consumer groups, database
schemas, data folder and ports, so tests never disturb each other or a running `make run`."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
from anomaly.detector import DetectorConfig
from platform_common.testing import ServiceProcess, free_port
from standardwebhooks import Webhook

SECRET = "whsec_ZGVtby1kZXZlbG9wbWVudC1zZWNyZXQtMzJieXRlcyE="
ROUTING_KEY = "testroutingkey0123456789abcdef01"
# the first point at which the service's default detector may alert: after its warm-up, the model's install and the
# settling time that follows it (the detector's defaults, chosen on NAB's tuning part)
_DETECTOR = DetectorConfig()
ALERTABLE_FROM = _DETECTOR.warmup + _DETECTOR.install_after + _DETECTOR.settle
SPIKE_AT = ALERTABLE_FROM + 20
MODULES = {"ingest-webhook": "ingest_webhook", "enrich": "enrich", "anomaly": "anomaly", "notify": "notify",
           "rag": "rag", "reports": "reports"}


class Platform:
    def __init__(self, run_id: str, data_dir: Path, services: tuple[str, ...], extra_env: dict | None = None):
        self.run_id = run_id
        self.topics = {t: f"{t}.{run_id}" for t in ("events.raw.v1", "events.enriched.v1", "anomalies.v1",
                                                      "notifications.v1", "reports.v1", "documents.v1",
                                                      "events.contextualized.v1")}
        self.ports = {name: free_port() for name in (*services, "receivers")}
        self.schemas = {name: f"{name.replace('-', '_')}_{run_id}" for name in ("anomaly", "notify", "reports", "rag")}
        common = {"STACK_DATA_DIR": str(data_dir), "LOG_LEVEL": "INFO", **(extra_env or {})}
        receivers_url = f"http://127.0.0.1:{self.ports['receivers']}"
        t, p, s = self.topics, self.ports, self.schemas
        env = {
            "ingest-webhook": {"INGEST_PORT": p.get("ingest-webhook"), "INGEST_TOPIC": t["events.raw.v1"],
                               "WEBHOOK_SECRET_DEMO": SECRET, "INGEST_DEV_SECRETS": "1"},
            "enrich": {"ENRICH_PORT": p.get("enrich"), "ENRICH_APP_ID": f"enrich-{run_id}",
                       "ENRICH_INPUT_TOPIC": t["events.raw.v1"], "ENRICH_OUTPUT_TOPIC": t["events.enriched.v1"]},
            "anomaly": {"ANOMALY_PORT": p.get("anomaly"), "ANOMALY_APP_ID": f"anomaly-{run_id}",
                        "ANOMALY_SOURCE_TOPIC": t["events.enriched.v1"], "ANOMALY_ALERT_TOPIC": t["anomalies.v1"],
                        "ANOMALY_DB_SCHEMA": s["anomaly"]},
            "notify": {"NOTIFY_PORT": p.get("notify"), "NOTIFY_TOPICS": json.dumps([t["anomalies.v1"]]),
                       "NOTIFY_NOTIFICATIONS_TOPIC": t["notifications.v1"], "NOTIFY_GROUP_ID": f"notify-{run_id}",
                       "NOTIFY_DB_SCHEMA": s["notify"], "NOTIFY_PAGERDUTY_URL": f"{receivers_url}/v2/enqueue",
                       "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "SLACK_WEBHOOK_URL": f"{receivers_url}/slack/alerts"},
            "rag": {"RAG_PORT": p.get("rag"), "RAG_DB_SCHEMA": s["rag"], "RAG_GROUP": f"rag-{run_id}",
                    "RAG_DOCUMENTS_TOPIC": t["documents.v1"], "RAG_ENRICHED_TOPIC": t["events.enriched.v1"],
                    "RAG_CONTEXTUALIZED_TOPIC": t["events.contextualized.v1"]},
            "reports": {"REPORTS_PORT": p.get("reports"), "REPORTS_DB_SCHEMA": s["reports"],
                        "REPORTS_RAW_TOPIC": t["events.raw.v1"], "REPORTS_ENRICHED_TOPIC": t["events.enriched.v1"],
                        "REPORTS_ANOMALIES_TOPIC": t["anomalies.v1"], "REPORTS_TOPIC": t["reports.v1"],
                        "REPORTS_DOCUMENTS_TOPIC": t["documents.v1"], "REPORTS_GROUP": f"reports-{run_id}"},
        }
        self.services = {
            name: ServiceProcess(name, MODULES[name], p[name],
                                 {**common, **{k: str(v) for k, v in env[name].items()}}, data_dir)
            for name in services}
        self.receivers = ServiceProcess("receivers", "notify.dev_receivers", p["receivers"], common, data_dir,
                                        args=("--port", str(p["receivers"])), ready_path="/_received/pagerduty")
        self.receivers_url = receivers_url
        # the consumer group and input topic of each stream service, for lag
        self.groups = {"enrich": (f"enrich-{run_id}", t["events.raw.v1"]),
                       "anomaly": (f"anomaly-{run_id}", t["events.enriched.v1"]),
                       "notify": (f"notify-{run_id}", t["anomalies.v1"]),
                       "rag": (f"rag-{run_id}-contextualize", t["events.enriched.v1"]),
                       "reports": (f"reports-{run_id}", t["events.raw.v1"])}
        self.spans_dir = data_dir / "spans"

    def start(self) -> "Platform":
        procs = [self.receivers, *self.services.values()]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()
        return self

    def stop(self) -> None:
        for proc in [*self.services.values(), self.receivers]:
            proc.stop()

    def restart(self, name: str) -> float:
        """kill -9 then start again; returns the seconds until the service is ready."""
        proc = self.services[name]
        proc.kill()
        started = time.monotonic()
        proc.start()
        proc.wait_ready()
        return time.monotonic() - started

    def received(self, target: str = "pagerduty") -> list[dict]:
        return httpx.get(f"{self.receivers_url}/_received/{target}", timeout=10).json()

    def logs(self) -> str:
        return "\n\n".join(f"--- {p.name}\n{p.tail()}" for p in self.services.values())


def sign(msg_id: str, body: str, at: datetime | None = None) -> dict:
    at = at or datetime.now(timezone.utc)
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(SECRET).sign(msg_id, at, body)}


@dataclass
class Sender:
    """Posts demo-source webhooks as a well-behaved publisher: a delivery not answered 2xx is retried with the same
    id. `accepted` holds the event ids answered 202 (or 200 for a replay of one stored before)."""

    port: int
    accepted: set[str] = field(default_factory=set)
    refused: dict[int, int] = field(default_factory=dict)
    sent: int = 0

    def post(self, client: httpx.Client, payload: dict, attempts: int = 120) -> int | None:
        body = json.dumps(payload)
        self.sent += 1
        for _ in range(attempts):
            try:
                answer = client.post(f"http://127.0.0.1:{self.port}/webhooks/demo", content=body,
                                     headers=sign(payload["id"], body))
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code in (200, 202):
                self.accepted.add(answer.json()["event_id"])
                return answer.status_code
            if answer is not None:
                self.refused[answer.status_code] = self.refused.get(answer.status_code, 0) + 1
            time.sleep(0.5)
        return None

    def flow(self, payloads: list[dict], rate: float) -> threading.Thread:
        """Sends `payloads` at about `rate` per second in a background thread."""
        def run() -> None:
            with httpx.Client(timeout=10) as client:
                started = time.monotonic()
                for i, payload in enumerate(payloads):
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self.post(client, payload)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def metric_payloads(run_id: str, streams: int, points: int, spike_at: int | None = None,
                    text_every: int = 1) -> list[dict]:
    """Interleaved points of `streams` steady streams; each stream spikes at `spike_at` for three points. One point
    in `text_every` carries a text (the others are metric-only, which enrich's models skip)."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    out = []
    for i in range(points):
        for s in range(streams):
            spike = spike_at is not None and spike_at <= i < spike_at + 3
            out.append({"id": f"{run_id}-s{s}-{i}", "stream": f"chaos-{run_id}-{s}", "type": "reading",
                        "metrics": {"load": 500.0 if spike else 50.0 + (i % 7) * 0.5},
                        "occurred_at": int((start + 60 * i) * 1000)})
            if i % text_every == 0:
                out[-1]["text"] = f"Reading {i} of machine {s} at Acme Corp looks fine."
    return out
