"""notify's benchmark: alerts delivered per second to local receivers, and delivery latency percentiles.

Runs notify as a process (`python -m notify`) against the running stack, with the local PagerDuty/Slack receivers
in this process; each alert is critical, so it makes one PagerDuty event and one Slack message. Baseline, in the
same run: the receivers' own ceiling, the same Slack message posted straight from one HTTP client.

    .venv/bin/python services/notify/bench.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from notify import slack
from notify.dev_receivers import DevReceivers
from notify.settings import NotifySettings
from platform_common.kafka import ANOMALIES, Publisher, ensure_topics
from platform_common.testing import drop_topics, free_port

ALERTS = int(os.environ.get("NOTIFY_BENCH_ALERTS", "500"))
PACED, PACED_RATE = 100, 5.0
PD_KEY = "B3NCHKEY0123456789abcdef01234567"
ROUTES = """
receivers:
  - {name: pd, type: pagerduty, routing_key_env: NOTIFY_BENCH_PD_KEY}
  - {name: slack, type: slack, webhook_url_env: NOTIFY_BENCH_SLACK}
route:
  receiver: slack
  group_wait: 0s
  group_interval: 0s
  routes:
    - {matchers: ['severity="critical"'], receiver: pd, continue: true}
    - receiver: slack
"""


def alert(run: str, n: int) -> dict:
    now = int(time.time() * 1000)
    return {"alert_id": uuid.uuid4().hex, "dedup_key": f"bench-{run}-{n}", "action": "trigger",
            "stream_id": f"bench-{run}-{n}", "source": "bench", "tenant": "bench", "metric": "latency_ms",
            "value": 300.0, "score": 5.0, "threshold": 120.0, "severity": "critical", "window_start": now - 60_000,
            "window_end": now, "detector": "lstm-autoencoder", "model_version": "bench", "event_id": f"evt-{n}",
            "traceparent": None, "attributes": {}, "created_at": now}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def baseline(url: str, seconds: float = 3.0) -> float:
    body = slack.message([alert("baseline", 0)], lambda a: [])
    async with httpx.AsyncClient() as client:
        count, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            (await client.post(url, json=body)).raise_for_status()
            count += 1
    return count / (time.monotonic() - started)


async def main() -> None:
    run = uuid.uuid4().hex[:8]
    receivers = DevReceivers()
    port = await receivers.start()
    settings = NotifySettings(notify_topics=[f"bench.notify.alerts.{run}"],
                              notify_notifications_topic=f"bench.notify.outcomes.{run}",
                              notify_group_id=f"notify-bench-{run}", notify_db_schema=f"notify_bench_{run}")
    await ensure_topics(settings, settings.notify_topics)
    routes = Path(tempfile.mkdtemp()) / "routes.yaml"
    routes.write_text(ROUTES)
    env = {**os.environ, "NOTIFY_TOPICS": json.dumps(settings.notify_topics),
           "NOTIFY_GROUP_ID": settings.notify_group_id,
           "NOTIFY_NOTIFICATIONS_TOPIC": settings.notify_notifications_topic, "NOTIFY_ROUTES_FILE": str(routes),
           "NOTIFY_DB_SCHEMA": settings.notify_db_schema,
           "NOTIFY_PORT": os.environ.get("NOTIFY_BENCH_PORT", str(free_port())), "LOG_LEVEL": "WARNING",
           "NOTIFY_PAGERDUTY_URL": f"http://127.0.0.1:{port}/v2/enqueue", "NOTIFY_BENCH_PD_KEY": PD_KEY,
           "NOTIFY_BENCH_SLACK": f"http://127.0.0.1:{port}/slack/bench", "NOTIFY_POLL_INTERVAL": "0.05"}
    process = await asyncio.create_subprocess_exec(sys.executable,
                                                   *os.environ.get("NOTIFY_BENCH_PYTHON_ARGS", "").split(),
                                                   "-m", "notify", env=env, stdout=asyncio.subprocess.DEVNULL)
    publisher = Publisher(settings)
    await publisher.start()
    topic = settings.notify_topics[0]
    try:
        ceiling = await baseline(f"http://127.0.0.1:{port}/slack/baseline")

        def count() -> int:
            return len(receivers.accepted("slack/bench")) + len(receivers.accepted("pagerduty"))

        async def deliver(batch: list[dict], timeout: float, rate: float | None = None) -> dict[str, float]:
            """Publishes `batch` (at `rate` alerts/s, or in bursts of 100) and waits for every delivery."""
            sent: dict[str, float] = {}
            want = count() + 2 * len(batch)
            step = 1 if rate else 100
            for start in range(0, len(batch), step):
                chunk = batch[start:start + step]
                for a in chunk:
                    sent[a["dedup_key"]] = time.monotonic()
                await asyncio.gather(*(publisher.publish(topic, a["stream_id"], a, schema_of=ANOMALIES)
                                       for a in chunk))
                if rate:
                    await asyncio.sleep(max(0.0, sent[chunk[0]["dedup_key"]] + 1 / rate - time.monotonic()))
            deadline = time.monotonic() + timeout
            while count() < want:
                if time.monotonic() > deadline:
                    raise TimeoutError("notify did not deliver every alert in time")
                await asyncio.sleep(0.02)
            return sent

        def latencies(sent: dict[str, float]) -> list[float]:
            found = []
            for target, key_of in (("pagerduty", lambda body: body["dedup_key"]),
                                   ("slack/bench", lambda body: body["text"].rsplit(" on ", 1)[1])):
                found += [(c.at - sent[key_of(c.body)]) * 1000 for c in receivers.calls[target]
                          if key_of(c.body) in sent]
            return found

        await deliver([alert(run, -n - 1) for n in range(20)], timeout=60)  # warm-up: group join, schemas
        paced = await deliver([alert(run, 10_000 + n) for n in range(PACED)], timeout=60, rate=PACED_RATE)
        steady = latencies(paced)
        burst = [alert(run, n) for n in range(ALERTS)]
        started = time.monotonic()
        sent = await deliver(burst, timeout=150)
        elapsed = time.monotonic() - started
        loaded = latencies(sent)
        duplicates = len(loaded) - 2 * ALERTS
        rejected = sum(c.status == 400 for calls in receivers.calls.values() for c in calls)
    finally:
        await publisher.stop()
        process.send_signal(signal.SIGTERM)
        await process.wait()
        await receivers.stop()
        await cleanup(settings)

    def pcts(ms: list[float]) -> str:
        return f"{pct(ms, 50):.0f} / {pct(ms, 95):.0f} / {pct(ms, 99):.0f} / {max(ms):.0f}"

    print(f"""## notify

| measure | value |
|---|---|
| burst: alerts published at once (critical: 1 PagerDuty event + 1 Slack message each) | {ALERTS} |
| burst: alerts delivered per second (to both receivers) | {ALERTS / elapsed:.1f} |
| burst: deliveries per second | {len(loaded) / elapsed:.1f} |
| burst: delivery latency p50 / p95 / p99 / max (ms, produce → receiver; mostly queueing) | {pcts(loaded)} |
| steady: delivery latency p50 / p95 / p99 / max (ms) at {PACED_RATE:g} alerts/s, {PACED} alerts | {pcts(steady)} |
| deliveries rejected by the receivers' format checks / sent twice | {rejected} / {duplicates} |
| baseline: one HTTP client posting straight to the same local receiver (requests/s) | {ceiling:.0f} |

group_wait 0s, no rate limits, one notify process; 2 cores shared with Kafka, PostgreSQL, the registry and other
work (load average {os.getloadavg()[0]:.1f} at the end). Command: `.venv/bin/python services/notify/bench.py`""")


async def cleanup(settings: NotifySettings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute(f"drop schema if exists {settings.notify_db_schema} cascade")
    await conn.close()
    drop_topics(settings, [*settings.notify_topics, settings.notify_notifications_topic])


if __name__ == "__main__":
    asyncio.run(main())
