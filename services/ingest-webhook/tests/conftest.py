"""Fixtures of the ingest-webhook tests: the real app served by uvicorn on a free port, against the real stack,
publishing to a topic of its own per test module; secrets generated per run; signing helpers."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import importlib.util
import secrets as pysecrets
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from standardwebhooks import Webhook

from ingest_webhook.app import create_app
from ingest_webhook.settings import IngestSettings
from ingest_webhook.sources import load_sources
from platform_common.testing import drop_topics, free_port

ROOT = Path(__file__).resolve().parents[3]


def _load_private_kafka():
    spec = importlib.util.spec_from_file_location("private_kafka", ROOT / "tests" / "support" / "private_kafka.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PrivateKafka


PrivateKafka = _load_private_kafka()


def whsec() -> str:
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(24)).decode()


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    """One run's secrets, by variable; the *_NEXT ones are rotated in beside the current ones."""
    return {"WEBHOOK_SECRET_DEMO": whsec(), "WEBHOOK_SECRET_DEMO_NEXT": whsec(),
            "WEBHOOK_SECRET_GITHUB": pysecrets.token_hex(20),
            "WEBHOOK_SECRET_STRIPE": "whsec_" + pysecrets.token_hex(16),
            "WEBHOOK_SECRET_METER": whsec()}


@pytest.fixture(scope="module")
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def ingest_settings(unique) -> IngestSettings:
    return IngestSettings(service_name="ingest-webhook-test", ingest_topic=f"events.raw.v1.test-{unique}")


@pytest.fixture(scope="module")
def sources(secrets, unique) -> dict:
    loaded = load_sources(IngestSettings().ingest_sources_file, secrets)
    demo = loaded["demo"]
    # sources with small limits, named per run so other runs sharing Redis do not count against them
    loaded[f"limited-{unique}"] = dataclasses.replace(demo, name=f"limited-{unique}", rate_limit=3, rate_period=60)
    loaded["tiny"] = dataclasses.replace(demo, name="tiny", max_body_bytes=200)
    return loaded


class Server:
    """Runs the app with uvicorn in a thread of its own (its own event loop), like `python -m ingest_webhook`."""

    def __init__(self, app, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                                   loop="asyncio", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ingest-webhook app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def drop_topic(settings: IngestSettings) -> None:
    """Removes a test topic, its DLQ and its registry subject."""
    drop_topics(settings, [settings.ingest_topic])


@pytest.fixture(scope="module")
def server(ingest_settings, sources):
    with Server(create_app(ingest_settings, sources), free_port()) as running:
        yield running
    drop_topic(ingest_settings)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


# --- signing as each publisher does it -------------------------------------------------------------------

def now_ts() -> int:
    return int(time.time())


def standard_headers(secret: str, body: str, msg_id: str | None = None, timestamp: int | None = None) -> dict:
    """Headers signed by the real `standardwebhooks` library."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp if timestamp is not None else now_ts()
    signature = Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(timestamp, dt.UTC), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature,
            "content-type": "application/json"}


def github_headers(secret: str, body: bytes, event: str = "issues") -> dict:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-GitHub-Event": event, "Content-Type": "application/json"}


def stripe_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict:
    # https://docs.stripe.com/webhooks#verify-manually
    t = timestamp if timestamp is not None else now_ts()
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={digest}", "Content-Type": "application/json"}


class Sign:
    """The signing helpers, handed to tests as the `sign` fixture (test modules cannot import conftest)."""
    standard = staticmethod(standard_headers)
    github = staticmethod(github_headers)
    stripe = staticmethod(stripe_headers)
    now = staticmethod(now_ts)
    whsec = staticmethod(whsec)


@pytest.fixture(scope="session")
def sign() -> type[Sign]:
    return Sign


def read_record(settings, coordinates: dict):
    """The record at an answer's coordinates, decoded by confluent-kafka's AvroDeserializer: (key, value, headers)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(coordinates["topic"], coordinates["partition"], coordinates["offset"])])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                break
        else:
            raise AssertionError(f"nothing at {coordinates}")
    finally:
        consumer.close()
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    value = deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
    return msg.key().decode(), value, dict(msg.headers() or [])


@pytest.fixture(scope="session")
def read_at():
    """`read_at(settings, coordinates)`: the Kafka record an answer points at."""
    return read_record


@pytest.fixture
def private_kafka():
    """A broker of this test's own, to stop and start at will."""
    with PrivateKafka() as kafka:
        yield kafka


@pytest.fixture(scope="session")
def serve():
    """`with serve(app) as server:` runs another app on a free port."""
    return lambda app: Server(app, free_port())
