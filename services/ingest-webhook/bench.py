"""Benchmark of ingest-webhook against the running stack; prints one markdown section.

    .venv/bin/python services/ingest-webhook/bench.py [--workers N] [--seconds S]

1. Sustained throughput: `python -m ingest_webhook` (verification, JSONata mapping, Redis replay + rate limit, Avro,
   acks=all) under Debian's `wrk` (C, one thread, 64 keep-alive connections) replaying pre-signed requests from a
   Lua script; accepted = the service's own `ingest_requests_total{outcome="accepted"}`.
2. Latency at a fixed 1,250 requests/s: an open-loop asyncio raw-socket client (uvloop), pre-signed requests,
   latency measured from each request's scheduled send time (no coordinated omission).
3. Baseline in the same run: a bare aiokafka producer (idempotent, acks=all, same linger) sending the same
   Avro records, as many in flight as the HTTP test has connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvloop
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from ingest_webhook.settings import IngestSettings
from platform_common.avro import AvroSerde
from platform_common.kafka import RAW
from platform_common.testing import (
    cpu_seconds,
    drop_topics,
    free_port,
    open_loop,
    percentile_with_missing,
    signed_request,
)

CONNECTIONS = 64
FIXED_RATE = 1250
LUA = """
local reqs, i = {}, 0
init = function(args)
  local f = io.open(args[1], "rb"); local data = f:read("*a"); f:close()
  local pos = 1
  while true do
    local e = string.find(data, "\\0", pos, true)
    if not e then break end
    reqs[#reqs + 1] = string.sub(data, pos, e - 1); pos = e + 1
  end
end
request = function() i = i + 1; if i > #reqs then i = 1 end; return reqs[i] end
done = function(summary, latency, requests)
  io.write(string.format('WRK {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, '
    .. '"p50": %d, "p95": %d, "p99": %d}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def payload(i: int) -> bytes:
    return json.dumps({"stream": f"line-{i % 64}", "type": "sensor.reading", "tenant": "bench",
                       "text": f"Reading {i} from the pump in Rotterdam looks normal",
                       "metrics": {"temperature": 60 + i % 17, "pressure": 3.1 + i % 5 / 10},
                       "attributes": {"site": "rtm"}}, separators=(",", ":")).encode()


def stored(settings: IngestSettings, topic: str) -> int:
    """Records in the topic (sum of end offsets): what Kafka acknowledged, whichever worker published it."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def run_wrk(url: str, requests: list[bytes], seconds: int, workdir: Path) -> dict:
    (workdir / "requests.bin").write_bytes(b"\0".join(requests) + b"\0")
    (workdir / "signed.lua").write_text(LUA)
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s",
                          "-s", str(workdir / "signed.lua"), url + "/webhooks/demo",
                          "--", str(workdir / "requests.bin")],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.split("WRK ", 1)[1])


async def bare_producer(settings: IngestSettings, topic: str, records: list[dict], seconds: float) -> float:
    """Records/s of a bare aiokafka producer: same Avro records, acks=all, idempotent, CONNECTIONS in flight."""
    serde = AvroSerde(settings.schema_registry_url)
    encoded = [(r["stream_id"].encode(), await serde.encode(topic, r, schema_of=RAW)) for r in records]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=settings.ingest_linger_ms)
    await producer.start()
    sent = 0
    deadline = time.perf_counter() + seconds

    async def sender(offset: int) -> None:
        nonlocal sent
        i = offset
        while time.perf_counter() < deadline:
            key, value = encoded[i % len(encoded)]
            await producer.send_and_wait(topic, value, key=key)
            sent += 1
            i += CONNECTIONS

    started = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    await producer.stop()
    return sent / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("INGEST_WORKERS", 2)))
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench: Debian's `wrk` is needed as the load generator (apt-get install wrk)")

    run = uuid.uuid4().hex[:8]
    topic, base_topic = f"events.raw.v1.bench-{run}", f"events.raw.v1.benchbase-{run}"
    settings = IngestSettings()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = base64.b64encode(secrets.token_bytes(24)).decode()
    env = {**os.environ, "INGEST_PORT": str(port), "INGEST_HOST": "127.0.0.1", "INGEST_TOPIC": topic,
           "INGEST_WORKERS": str(args.workers), "LOG_LEVEL": "WARNING", "INGEST_DEV_SECRETS": "1",
           "WEBHOOK_SECRET_DEMO": "whsec_" + secret}
    service = subprocess.Popen([sys.executable, "-m", "ingest_webhook"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    key = base64.b64decode(secret)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if service.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench: the service did not start")
            time.sleep(0.3)

        bodies = [payload(i) for i in range(512)]
        with tempfile.TemporaryDirectory() as tmp:
            warm = [signed_request(key, bodies[i % 512], port) for i in range(8000)]
            run_wrk(url, warm, 2, Path(tmp))  # warm-up: connections, JIT-less caches, producer metadata
            n = args.seconds * 6000  # more than the service can take: no request repeats (a repeat is a replay)
            load = [signed_request(key, bodies[i % 512], port) for i in range(n)]
            before, cpu_before, load_before = stored(settings, topic), cpu_seconds(service.pid), os.getloadavg()[0]
            wrk = run_wrk(url, load, args.seconds, Path(tmp))
            count = stored(settings, topic) - before
            sustained = count / (wrk["duration_us"] / 1e6)
            cpu_per_event = (cpu_seconds(service.pid) - cpu_before) / max(count, 1)
            machine_load = max(load_before, os.getloadavg()[0])

        time.sleep(2)
        fixed = [signed_request(key, bodies[i % 512], port) for i in range(FIXED_RATE * min(args.seconds, 10))]
        latencies, statuses = uvloop.run(open_loop(port, fixed, FIXED_RATE, CONNECTIONS))
        records = [{"event_id": str(uuid.uuid4()), "delivery_id": str(i), "source": "demo", "type": "sensor.reading",
                    "stream_id": f"line-{i % 64}", "tenant": "bench", "occurred_at": 0, "received_at": 0,
                    "text": {"body": "Reading from the pump in Rotterdam looks normal"},
                    "metrics": {"temperature": 61.0, "pressure": 3.2}, "attributes": {"site": "rtm"},
                    "raw_payload": bodies[i % 512].decode()} for i in range(512)]
        baseline = uvloop.run(bare_producer(settings, base_topic, records, min(args.seconds, 10)))
    finally:
        service.terminate()
        service.wait(timeout=30)
        drop_topics(settings, [topic, base_topic])

    ok = statuses.get(202, 0)
    print(f"## ingest-webhook\n\nMeasured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} "
          f"cores (1-min load average {machine_load:.1f} during the run: other work shares the cores), load generator "
          f"on the same machine, the shared stack running; service with "
          f"{args.workers} uvicorn worker(s) (uvloop, httptools), HMAC verification, JSONata mapping, Redis replay "
          f"claim + rate limit, Avro, idempotent producer with acks=all.\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| sustained accepted webhooks/s (`wrk`, 1 thread, {CONNECTIONS} connections, {args.seconds} s, "
          f"pre-signed requests) | {sustained:,.0f} | ≥ 2,500 |")
    print(f"| latency under that load p50 / p95 / p99 (wrk) | {wrk['p50'] / 1000:.1f} / {wrk['p95'] / 1000:.1f} / "
          f"{wrk['p99'] / 1000:.1f} ms | |")
    print(f"| service CPU per accepted webhook (all its processes) | {cpu_per_event * 1000:.2f} ms "
          f"(= {1 / cpu_per_event:,.0f}/s per fully available core) | |")
    print(f"| non-2xx / socket errors under that load | {wrk['non2xx']} / {wrk['errors']} | 0 |")
    print(f"| latency at a fixed {FIXED_RATE:,}/s, p50 / p95 / p99 (open-loop asyncio raw-socket client, "
          f"{len(fixed):,} requests, {ok:,} answered 202 in time) | "
          f"{percentile_with_missing(latencies, len(fixed), 50)} / "
          f"{percentile_with_missing(latencies, len(fixed), 95)} / "
          f"{percentile_with_missing(latencies, len(fixed), 99)} "
          "| p99 < 50 ms |")
    print(f"| baseline: bare aiokafka producer, same Avro records, acks=all, {CONNECTIONS} in flight | "
          f"{baseline:,.0f} records/s | |")
    print(f"| service / bare producer | {sustained / baseline:.0%} | |")
    print(f"\n`.venv/bin/python services/ingest-webhook/bench.py --workers {args.workers} --seconds {args.seconds}`")


if __name__ == "__main__":
    main()
