"""Helpers for tests and benches of any service: a service process's free port and readiness; read a topic back
with confluent-kafka, an independent client; consumer lag; an open-loop load of signed webhooks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client.parser import text_string_to_metric_families

from .settings import CommonSettings


class ServiceProcess:
    """`python -m <module>` as `make run` starts it, in a process group of its own (its workers included), its
    output appended to `<log_dir>/<name>.log`; ready once `ready_path` on `port` answers 200."""

    def __init__(self, name: str, module: str, port: int, env: dict[str, str], log_dir: Path,
                 args: tuple[str, ...] = (), ready_path: str = "/readyz"):
        self.name, self.module, self.port, self.args, self.ready_path = name, module, port, args, ready_path
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        try:
            wait_http(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout, self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise type(e)(f"{self.name}: {e}\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit; what a crash does."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def metric_sum(exposition: str, sample: str, **labels: str) -> float:
    """The sum of the samples named `sample` (e.g. `x_total`) carrying `labels`, in Prometheus text exposition."""
    return sum(s.value for family in text_string_to_metric_families(exposition) for s in family.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its children, e.g. a service and its workers."""
    main = psutil.Process(pid)
    total = 0.0
    for p in [main, *main.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Runs an ASGI `app` with uvicorn on a free loopback port of the current event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]  # the caller's
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # could not start: say why
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Returns once `url` answers 200; fails at once if `proc` (the process serving it) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def read_messages(settings: CommonSettings, topic: str, count: int, timeout: float = 20.0,
                  group: str | None = None) -> list[Message]:
    """Reads up to `count` committed records of `topic` from its beginning (fewer if `timeout` runs out)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": group or f"reader-{topic}-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                found.append(msg)
    finally:
        consumer.close()
    return found


def consumer_lag(settings: CommonSettings, group: str, topic: str) -> int:
    """Records of `topic` not yet committed by `group`, summed over partitions (a partition the group never committed
    counts from its start). A transactional producer leaves a commit marker after its records, which a consumer never
    receives and may never commit past, so end minus committed offset over-counts by the markers: a small gap is read
    (read_committed) and only its records are counted."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        gaps = []
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            gaps.append((tp.partition, tp.offset if tp.offset >= 0 else low, high))
    finally:
        consumer.close()
    return sum(high - start if high - start > 1000 else records_between(settings, topic, partition, start, high)
               for partition, start, high in gaps if high > start)


def records_between(settings: CommonSettings, topic: str, partition: int, start: int, end: int,
                    timeout: float = 5.0) -> int:
    """Committed records of one partition in [start, end): offsets that are commit markers or aborted are not."""
    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"gap-{time.monotonic_ns()}",
                       "enable.auto.commit": False, "isolation.level": "read_committed"})
    tp = TopicPartition(topic, partition, start)
    reader.assign([tp])
    found, deadline = 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = reader.poll(0.2)
            offset = msg.offset() if msg is not None and not msg.error() else None
            if offset is not None and offset < end:
                found += 1
            position = reader.position([TopicPartition(topic, partition)])[0].offset
            if position >= end:
                break
        return found
    finally:
        reader.close()


def decode_avro(settings: CommonSettings, msg: Message) -> dict:
    """Decodes a value with confluent-kafka's AvroDeserializer against the registry."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    return deserializer(msg.value(), SerializationContext(msg.topic() or "", MessageField.VALUE))


def count_event_ids(settings: CommonSettings, topic: str, expected: set[str], timeout: float = 60.0,
                    settle: float = 3.0, field: str = "event_id") -> Counter[str]:
    """How often each id (the values' `field`, e.g. anomalies.v1's alert_id) occurs in `topic` (Avro values), read
    committed from its beginning: until every expected id was seen and nothing more arrived for `settle` seconds (a
    late repeat would show up), or `timeout`."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"counter-{topic}-{time.monotonic_ns()}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    counts: Counter[str] = Counter()
    deadline = last = time.monotonic()
    deadline += timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if expected <= counts.keys() and time.monotonic() - last >= settle:
                    break
                continue
            last = time.monotonic()
            counts[deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))[field]] += 1
    finally:
        consumer.close()
    return counts


def drop_topics(settings: CommonSettings, topics: list[str], with_dlqs: bool = True) -> None:
    """Deletes a test's topics (and their DLQs) and their registry subjects: the stack is shared."""
    import httpx
    from confluent_kafka.admin import AdminClient

    names = [*topics, *(f"{t}.dlq" for t in topics if with_dlqs and not t.endswith(".dlq"))]
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})  # alive until the futures end
    for future in admin.delete_topics(names, operation_timeout=10).values():
        try:
            future.result(timeout=20)
        except Exception:  # a topic the test never created
            pass
    for name in names:
        for permanent in ("false", "true"):  # a soft delete first, as the registry requires
            httpx.delete(f"{settings.schema_registry_url}/subjects/{name}-value", params={"permanent": permanent},
                         timeout=5)


# --- load generation against ingest-webhook: raw signed requests over keep-alive sockets ------------------

def signed_request(key: bytes, body: bytes, port: int) -> bytes:
    """One raw HTTP/1.1 request, signed as the standardwebhooks library signs (id.timestamp.body)."""
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    sig = base64.b64encode(hmac.digest(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256)).decode()
    return (f"POST /webhooks/demo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nwebhook-id: {msg_id}\r\nwebhook-timestamp: {ts}\r\n"
            f"webhook-signature: v1,{sig}\r\n\r\n").encode() + body


async def open_loop(port: int, requests: Iterable[bytes], rate: float, connections: int = 64,
                    start: float | None = None) -> tuple[list[float], dict[int, int]]:
    """Open loop over `connections` keep-alive sockets: request i is due at start + i/rate, whatever happened
    before, and its latency counts from that moment (no coordinated omission). `requests` may be a generator, so
    that each request is signed when it is due. `start` (time.time()) lets the caller know every due moment."""
    jobs: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (job := await jobs.get()) is not None:
            due, raw = job
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"(?i)content-length: *(\d+)", head)
            if found is None:
                raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
            length = int(found.group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - due)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    first = time.perf_counter() + (0.2 if start is None else start - time.time())
    for i, raw in enumerate(requests):
        due = first + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait((due, raw))
    for _ in workers:
        jobs.put_nowait(None)
    # a service slower than the rate builds a backlog: stop waiting 10 s after the last request was due
    _, pending = await asyncio.wait(workers, timeout=max(0.0, due - time.perf_counter()) + 10)
    for task in pending:
        task.cancel()
    return latencies, statuses


def percentile_with_missing(latencies: list[float], total: int, p: float) -> str:
    """Unanswered requests count as slower than every answer, so a backlog cannot flatter the percentile."""
    if len(latencies) < total * p / 100:
        return "not answered"
    padded = sorted(latencies) + [float("inf")] * (total - len(latencies))
    return f"{padded[min(total - 1, int(total * p / 100))] * 1000:.1f} ms"
