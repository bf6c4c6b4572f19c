"""`make demo`: realistic traffic through the front door of the platform that `make run` started.

- local PagerDuty and Slack receivers (notify's dev receivers on :8099) that print what they get;
- a few reference documents into rag's shared namespace (documents.v1, as `python -m rag.folder --shared` does);
- text events (reviews, support tickets) and metric streams replayed from ../shared/datasets/nab-dev, all as
  Standard Webhooks signed with the development secret of deploy/local/dev.env;
- then it waits until an alert reached both receivers, a new record is in `events.contextualized.v1` and a report
  made since the demo started is in the portal (a fresh one is made once the first alert went out).
  `--check` exits then, with status 1 if a check failed; otherwise the receivers keep printing until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
from confluent_kafka import Consumer, TopicPartition
from platform_common.kafka import CONTEXTUALIZED, DOCUMENTS, Publisher
from platform_common.settings import CommonSettings
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, dev_env  # noqa: E402

NAB = ROOT.parent / "shared" / "datasets" / "nab-dev" / "data"
SERIES = ["artificialWithAnomaly/art_daily_jumpsup.csv", "realKnownCause/machine_temperature_system_failure.csv"]
INGEST = "http://localhost:8000/webhooks/demo"
RECEIVERS = "http://localhost:8099"
REFERENCE_DOCUMENTS = [
    ("policy-refunds", "Refund policy", "Customers may request a refund within 30 days of purchase. Refunds above "
     "500 EUR need approval by the finance team. Chargebacks are reported to the payment processor within 2 days."),
    ("runbook-temperature", "Machine temperature runbook", "When a machine temperature sensor rises above its normal "
     "band, check the cooling fans and the ambient temperature. Sustained overheating above 95 degrees precedes "
     "bearing failure; stop the machine and page the on-call maintenance engineer."),
    ("policy-privacy", "Data protection note", "Support tickets that contain personal data fall under GDPR. Account "
     "numbers and card numbers must be masked before they are stored outside the payment system."),
]
TEXTS = [
    "The new Acme Router X200 is fantastic, setup took five minutes and the speed doubled.",
    "I was charged 250 EUR twice for order 1123 and nobody at Globex answers my emails. Terrible service.",
    "Delivery to Berlin was late by 3 days, the package was fine though.",
    "Machine 7 in the Hamburg plant is overheating again; maintenance says the fan is broken.",
    "Refund request: the Initech Printer P5 stopped working after a week, I want my 199 USD back.",
    "Great support from Maria at Umbrella Corp, the issue was solved on the first call.",
]


class Signer:
    def __init__(self, secret: str):
        self.webhook = Webhook(secret)

    def post(self, client: httpx.AsyncClient, payload: dict):
        body = json.dumps(payload)
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(timezone.utc)
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self.webhook.sign(msg_id, now, body)}
        return client.post(INGEST, content=body, headers=headers)


async def send_all(client: httpx.AsyncClient, signer: Signer, payloads: list[dict], concurrency: int = 16) -> int:
    gate = asyncio.Semaphore(concurrency)
    accepted = 0

    async def one(payload: dict) -> None:
        nonlocal accepted
        async with gate:
            for _ in range(5):  # 429/503 are retried, as a well-behaved publisher does
                answer = await signer.post(client, payload)
                if answer.status_code in (200, 202):
                    accepted += 1
                    return
                await asyncio.sleep(float(answer.headers.get("retry-after", 0.5)))
            print(f"demo: a webhook was refused: {answer.status_code} {answer.text[:200]}")

    await asyncio.gather(*(one(p) for p in payloads))
    return accepted


def nab_payloads(series: str, before: int = 1500, after: int = 60) -> list[dict]:
    """The points around the series' first labelled anomaly, shifted so that the last one happens now: a replay
    of the incident as if live, with enough history before it for the detector's warm-up."""
    stream = "nab/" + Path(series).stem
    with open(NAB / series) as f:
        rows = list(csv.DictReader(f))
    labels = json.loads((NAB.parent / "labels.json").read_text())[series]
    start = labels[0][0][:19]
    first = next(i for i, r in enumerate(rows) if r["timestamp"] >= start)
    rows = rows[max(0, first - before):first + after]
    parse = lambda r: datetime.fromisoformat(r["timestamp"]).replace(tzinfo=timezone.utc)  # noqa: E731
    shift = datetime.now(timezone.utc) - parse(rows[-1])
    return [{"id": f"{stream}/{r['timestamp']}", "stream": stream, "type": "metric.reading",
             "occurred_at": int((parse(r) + shift).timestamp() * 1000), "metrics": {"value": float(r["value"])},
             "attributes": {"dataset": "nab"}} for r in rows]


async def wait_for(what: str, check, timeout: float = 120, quiet: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                if not quiet:
                    print(f"demo: {what}: yes")
                return True
        except httpx.HTTPError:
            pass
        await asyncio.sleep(2)
    if not quiet:
        print(f"demo: {what}: not within {timeout:.0f}s")
    return False


def records_in(topic: str) -> int:
    """Records in a topic so far (the sum of its partitions' end offsets)."""
    consumer = Consumer({"bootstrap.servers": CommonSettings().kafka_bootstrap_servers, "group.id": "demo"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


async def main(check: bool) -> int:
    env = dev_env()
    started, clock = datetime.now(timezone.utc), time.monotonic()
    contextualized_before = await asyncio.to_thread(records_in, CONTEXTUALIZED)
    receivers = subprocess.Popen([sys.executable, "-u", "-m", "notify.dev_receivers", "--port", "8099"])
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_for("receivers listening", lambda: client.get(f"{RECEIVERS}/_received/pagerduty"), 20)
            # reference documents every tenant reads: the shared namespace, open to documents.v1 only (no API key)
            publisher = Publisher(CommonSettings(service_name="demo"))
            await publisher.start()
            try:
                for doc_id, title, content in REFERENCE_DOCUMENTS:
                    await publisher.publish(DOCUMENTS, doc_id, {
                        "document_id": doc_id, "op": "upsert", "title": title, "content": content,
                        "source_uri": f"demo://documents/{doc_id}", "tenant": "_shared", "sector": None,
                        "doc_type": None, "metadata": {"shared": "true"}, "updated_at": int(time.time() * 1000)},
                        schema_of=DOCUMENTS)
            finally:
                await publisher.stop()
            print(f"demo: published {len(REFERENCE_DOCUMENTS)} shared reference documents")
            signer = Signer(env["WEBHOOK_SECRET_DEMO"])
            texts = [{"id": f"text-{uuid.uuid4().hex}", "stream": "support/tickets", "type": "ticket", "text": t}
                     for t in TEXTS]
            print(f"demo: posted text events: {await send_all(client, signer, texts)} accepted")
            for series in SERIES:
                payloads = nab_payloads(series)
                accepted = await send_all(client, signer, payloads)
                print(f"demo: replayed {series}: {accepted}/{len(payloads)} accepted")

            async def alerted() -> bool:
                pages = (await client.get(f"{RECEIVERS}/_received/pagerduty")).json()
                messages = (await client.get(f"{RECEIVERS}/_received/slack/alerts")).json()
                return bool(pages) and bool(messages)

            async def contextualized() -> bool:
                return await asyncio.to_thread(records_in, CONTEXTUALIZED) > contextualized_before

            api_key = {"Authorization": f"Bearer {env['DEMO_API_KEY']}"}  # tenant default's development key

            async def reported() -> bool:
                # a report made since the demo started is listed by reports' API
                return any(datetime.fromisoformat(r["generated_at"]) >= started for r in (
                    await client.get("http://localhost:8004/api/reports", headers=api_key)).json())

            async def fresh_report() -> None:
                """A report of the last 24 hours made as soon as an alert went out, so that it shows the anomaly."""
                if not await wait_for("an alert reached PagerDuty and Slack", alerted, quiet=True):
                    return
                answer = await client.post("http://localhost:8004/api/definitions/daily-operations/run",
                                           headers=api_key, timeout=600)
                if answer.is_success:
                    print(f"demo: new report with the demo's anomalies: {answer.json()['portal_url']} "
                          "(sign in as demo / demo-default)")

            report = asyncio.create_task(fresh_report())
            results = await asyncio.gather(wait_for("an alert reached PagerDuty and Slack", alerted),
                                           wait_for("a contextualized event was published", contextualized),
                                           wait_for("a report is in the portal (http://localhost:8004)", reported))
            await report
            print(f"demo: {'all checks passed' if all(results) else 'some checks failed'} "
                  f"{time.monotonic() - clock:.0f}s after the demo started")
            if not check:
                print("demo: the receivers keep printing until Ctrl-C")
                await asyncio.to_thread(receivers.wait)
        return 0 if all(results) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        receivers.terminate()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that `finally` stops the receivers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit when the checks are done (status 1 if one failed) instead of printing until Ctrl-C")
    sys.exit(asyncio.run(main(parser.parse_args().check)))
