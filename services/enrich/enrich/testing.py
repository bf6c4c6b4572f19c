"""Helpers shared by the tests and bench.py: raw events, the service and Triton as subprocesses on free ports, and
a reader of the enriched topic with confluent-kafka (an independent client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from platform_common.kafka import RAW, Publisher, ensure_topics
from platform_common.settings import CommonSettings
from platform_common.testing import ServiceProcess, drop_topics, free_port, wait_http

SERVICE = Path(__file__).resolve().parents[1]  # services/enrich
REPO = SERVICE.parents[1]


def raw_event(text: dict[str, str], stream_id: str = "stream-1", event_id: str | None = None) -> dict:
    now = int(time.time() * 1000)
    return {"event_id": event_id or uuid.uuid4().hex, "delivery_id": uuid.uuid4().hex, "source": "demo",
            "type": "message.created", "stream_id": stream_id, "tenant": "default", "occurred_at": now,
            "received_at": now, "text": text, "metrics": {}, "attributes": {}, "raw_payload": json.dumps(text)}


class EnrichProcess(ServiceProcess):
    """`python -m enrich` with its own app id (consumer group), topics, state dir and port."""

    def __init__(self, run_id: str, data_dir: Path, **env: str):
        self.run_id = run_id
        self.input = f"test.enrich.raw.{run_id}"
        self.output = f"test.enrich.enriched.{run_id}"
        super().__init__(f"enrich-{run_id}", "enrich", free_port(), {
            "ENRICH_APP_ID": f"enrich-test-{run_id}", "ENRICH_INPUT_TOPIC": self.input,
            "ENRICH_OUTPUT_TOPIC": self.output, "STACK_DATA_DIR": str(data_dir), "SERVICE_NAME": "enrich-test",
            "LOG_LEVEL": "WARNING", **env}, data_dir, ready_path="/healthz")

    def start(self) -> EnrichProcess:
        self.port = free_port()  # a fresh port at each start: a killed process's port may not be free again at once
        self.env["ENRICH_PORT"] = str(self.port)
        super().start()
        self.wait_ready()
        return self

    def cleanup(self) -> None:
        """Deletes the run's topics and their schema subjects (the stack is shared)."""
        drop_topics(CommonSettings(), [self.input, self.output])


async def publish_raw(publisher: Publisher, settings: CommonSettings, topic: str, events: list[dict]) -> None:
    await ensure_topics(settings, [topic])
    for e in events:
        await publisher.publish(topic, e["stream_id"], e, schema_of=RAW)


class TopicReader:
    """Reads a topic from its beginning with confluent-kafka and its AvroDeserializer (an independent client);
    partitions are assigned directly, so reading starts at once, without a group join."""

    def __init__(self, settings: CommonSettings, topic: str, partitions: int | None = None):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                                  "group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in range(partitions or settings.kafka_partitions)])
        self.deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
        self.seen: dict[str, tuple[dict, list]] = {}  # event_id -> (value, headers)
        self.count = 0

    def poll_until(self, event_ids: set[str], timeout: float) -> dict[str, tuple[dict, list]]:
        from confluent_kafka.serialization import MessageField, SerializationContext

        deadline = time.monotonic() + timeout
        while not event_ids <= self.seen.keys() and time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            value = self.deserializer(msg.value(), SerializationContext(self.topic, MessageField.VALUE))
            self.count += 1
            # a consumed message's headers are a list of (key, value) pairs, or None
            self.seen[value["event_id"]] = (value, cast(list, msg.headers() or []))
        return {i: self.seen[i] for i in event_ids if i in self.seen}

    def close(self) -> None:
        self.consumer.close()


@contextmanager
def running_triton(workdir: Path) -> Iterator[str]:
    """The Triton Inference Server of nvidia-pytriton (its own environment, `.venv-triton`, made by `make install`)
    serving deploy/triton on free ports; yields its HTTP address (host:port)."""
    python = REPO / ".venv-triton" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing: `make install` creates it (nvidia-pytriton, numpy<2)")
    ports = [free_port() for _ in range(3)]
    log = (workdir / "triton.log").open("wb")
    proc = subprocess.Popen([str(python), str(REPO / "deploy" / "triton" / "pytriton_server.py"),
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
                             str(ports[2])], stdout=log, stderr=log, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{ports[0]}/v2/models/minilm_multitask/ready", timeout=120, proc=proc)
        yield f"127.0.0.1:{ports[0]}"
    finally:
        # pytriton runs tritonserver as a child: the whole process group goes
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
