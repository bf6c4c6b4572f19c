"""Benchmark of enrich against the running stack: enriched events/s end to end through Kafka with each backend
(`local`, and `triton` against MLServer serving the same models), and model latency percentiles per backend.

Run: .venv/bin/python services/enrich/bench.py   (prints one markdown section)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from enrich.client import CircuitBreaker, LocalBackend, ModelClient, TritonBackend
from enrich.testing import EnrichProcess, raw_event, running_mlserver
from platform_common.kafka import RAW, Publisher, ensure_topics
from platform_common.settings import CommonSettings

SETTINGS = CommonSettings(service_name="enrich-bench")
TEXTS = [
    "Tim Cook said Apple will ship the iPhone 15 Pro in Paris on March 3, 2025 for $999. Great news, up 12%!",
    "Terrible support from Acme Holdings Inc., my MacBook Pro broke again and nobody answers.",
    "Dr. Emily Carter met Elon Musk in New York City at 10:30 am on 2024-05-01; revenue was 3.5 million EUR.",
    "Order 1234 shipped to Berlin yesterday, thanks for the quick delivery.",
]
EVENTS = {"local": 20_000, "triton": 6_000}


def count_output(topic: str, expected: int, timeout: float) -> tuple[int, float]:
    """Counts records of `topic` and returns (count, seconds between the first and last record's timestamps)."""
    consumer = Consumer({"bootstrap.servers": SETTINGS.kafka_bootstrap_servers, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(SETTINGS.kafka_partitions)])
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    try:
        while count < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                ts = msg.timestamp()[1] / 1000
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
                count += 1
    finally:
        consumer.close()
    return count, (last - first) if count > 1 else float("nan")


async def prepublish(topic: str, n: int) -> None:
    publisher = Publisher(SETTINGS, linger_ms=20)
    await publisher.start()
    try:
        await ensure_topics(SETTINGS, [topic])
        events = [raw_event({"body": TEXTS[i % len(TEXTS)]}, stream_id=f"stream-{i % 50}") for i in range(n)]
        for start in range(0, n, 1000):
            await asyncio.gather(*(publisher.publish(topic, e["stream_id"], e, schema_of=RAW)
                                   for e in events[start:start + 1000]))
    finally:
        await publisher.stop()


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + system) of the service process and of its model worker processes."""
    own = sum(proc.cpu_times()[:2])
    return own, sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))


def cpu_per_event(workdir: Path, n: int = 10_000) -> tuple[float, float]:
    """CPU milliseconds per enriched event (service process, model workers) with the local backend, a figure the
    other loads of a shared machine do not change: the service idles on an empty topic, then consumes n events."""
    service = EnrichProcess(f"bench{uuid.uuid4().hex[:8]}", workdir)
    asyncio.run(prepublish(service.input, 0))
    service.start()
    try:
        proc = psutil.Process(service.proc.pid)
        time.sleep(1)
        before = cpu_seconds(proc)
        asyncio.run(prepublish(service.input, n))
        count, _ = count_output(service.output, n, timeout=150)
        after = cpu_seconds(proc)
    finally:
        service.stop()
        service.cleanup()
    return tuple((a - b) * 1000 / count for a, b in zip(after, before))


def stream_throughput(backend: str, workdir: Path, triton_url: str | None) -> tuple[int, int, float]:
    env = {"ENRICH_BACKEND": backend, **({"ENRICH_TRITON_URL": triton_url} if triton_url else {})}
    service = EnrichProcess(f"bench{uuid.uuid4().hex[:8]}", workdir, **env)
    n = EVENTS[backend]
    asyncio.run(prepublish(service.input, n))
    service.start()
    try:
        count, seconds = count_output(service.output, n, timeout=150)
    finally:
        service.stop()
        service.cleanup()
    return n, count, count / seconds if seconds else float("nan")


async def model_latency(backend: str, triton_url: str | None) -> dict[int, list[float]]:
    out = {}
    for task in ("sentiment", "ner"):
        impl = LocalBackend(task, workers=1) if backend == "local" else TritonBackend(task, triton_url)
        client = ModelClient(task, impl, max_batch=256, max_wait_s=0, inflight=1, timeout_s=10,
                             breaker=CircuitBreaker(5, 5))
        await client.start()
        try:
            for size in (1, 100):
                texts = [TEXTS[i % len(TEXTS)] for i in range(size)]
                samples = []
                for _ in range(100 if size == 1 else 30):
                    started = time.perf_counter()
                    await client.predict(texts)
                    samples.append((time.perf_counter() - started) * 1000)
                out[(task, size)] = samples
        finally:
            await client.close()
    return out


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def main() -> None:
    rows, latency = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with running_mlserver(tmp / "mlserver") as triton_url:
            for backend in ("local", "triton"):
                url = triton_url if backend == "triton" else None
                n, count, rate = stream_throughput(backend, tmp, url)
                rows.append(f"| {backend} | {n} | {count} | {rate:,.0f} |")
                if backend == "local":
                    main_ms, workers_ms = cpu_per_event(tmp)
                for (task, size), samples in asyncio.run(model_latency(backend, url)).items():
                    latency.append(f"| {backend} | {task} | {size} | {pct(samples, 50):.2f} | {pct(samples, 95):.2f} "
                                   f"| {pct(samples, 99):.2f} |")
    print("## enrich\n")
    print("Enriched events per second end to end through Kafka (raw topic pre-filled, one `python -m enrich` "
          "worker; rate between the first and the last enriched record). Target: >= 2,000/s with `local`.\n")
    print("| backend | raw events | enriched | events/s |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nCPU per enriched event with `local` (independent of the machine's other load): {main_ms:.2f} ms in the "
          f"service process + {workers_ms:.2f} ms in its model worker processes. The service process is the "
          f"bottleneck: bound to one core by the GIL, one replica enriches at most about {1000 / main_ms:,.0f} "
          f"events/s (load average during this run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores).")
    print("\nModel request latency (ms) through the client (micro-batcher, timeout, breaker):\n")
    print("| backend | model | texts/request | p50 | p95 | p99 |\n|---|---|---|---|---|---|")
    print("\n".join(latency))
    print("\n`.venv/bin/python services/enrich/bench.py`")


if __name__ == "__main__":
    sys.exit(main())
