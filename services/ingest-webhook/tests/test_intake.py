"""End to end against the real stack: real signers in, Avro out read by confluent-kafka, the contract's errors."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from svix.webhooks import Webhook as SvixWebhook


def demo_body(**extra) -> str:
    return json.dumps({"stream": "line-7", "text": "The pump in Rotterdam failed again", "metrics":
                       {"temperature": 81.5, "pressure": 3}, **extra})


def test_standardwebhooks_signed_demo_is_published_and_readable(sign, client, secrets, ingest_settings, read_at):
    body = demo_body(type="sensor.alert", tenant="acme", occurred_at="2026-11-01T10:00:00Z",
                     attributes={"site": "rtm", "shift": 2})
    headers = {**sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body),
               "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    r = client.post("/webhooks/demo", content=body, headers=headers)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["topic"] == ingest_settings.ingest_topic and answer["offset"] >= 0
    key, event, kafka_headers = read_at(ingest_settings, answer)
    assert key == "line-7"
    assert event["event_id"] == answer["event_id"]
    assert event["delivery_id"] == headers["webhook-id"]
    assert (event["source"], event["type"], event["stream_id"], event["tenant"]) == \
        ("demo", "sensor.alert", "line-7", "acme")
    assert event["text"] == {"body": "The pump in Rotterdam failed again"}
    assert event["metrics"] == {"temperature": 81.5, "pressure": 3.0}
    assert event["attributes"] == {"site": "rtm", "shift": "2"}
    occurred = event["occurred_at"]
    assert int(occurred.timestamp()) == 1793527200  # 2026-11-01T10:00:00Z (a datetime: timestamp-millis)
    assert abs(event["received_at"].timestamp() - time.time()) < 60
    assert json.loads(event["raw_payload"]) == json.loads(body)
    # the sender's trace continues into Kafka
    assert kafka_headers["traceparent"].decode().split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


def test_svix_signed_payload_is_accepted(sign, client, secrets, ingest_settings, read_at):
    body = demo_body()
    msg_id, ts = f"msg_{uuid.uuid4().hex}", sign.now()
    import datetime as dt
    signature = SvixWebhook(secrets["WEBHOOK_SECRET_DEMO"]).sign(msg_id, dt.datetime.fromtimestamp(ts, dt.UTC),
                                                               body)
    r = client.post("/webhooks/demo", content=body, headers={
        "webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature,
        "content-type": "application/json"})
    assert r.status_code == 202, r.text
    assert read_at(ingest_settings, r.json())[1]["metrics"]["temperature"] == 81.5


def test_github_scheme_is_accepted_and_mapped(sign, client, secrets, ingest_settings, read_at):
    body = json.dumps({"action": "opened", "issue": {"title": "Crash on start", "body": "It fails in Berlin",
                                                      "updated_at": "2026-10-01T08:00:00Z"},
                       "repository": {"full_name": "acme/widgets"}, "sender": {"login": "octocat"}}).encode()
    headers = sign.github(secrets["WEBHOOK_SECRET_GITHUB"], body, event="issues")
    r = client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 202, r.text
    key, event, _ = read_at(ingest_settings, r.json())
    assert key == "acme/widgets"
    assert event["delivery_id"] == headers["X-GitHub-Delivery"]
    assert event["type"] == "issues.opened"
    assert event["text"] == {"title": "Crash on start", "body": "It fails in Berlin"}
    assert event["attributes"]["sender"] == "octocat"


def test_stripe_scheme_is_accepted_and_mapped(sign, client, secrets, ingest_settings, read_at):
    evt = f"evt_{uuid.uuid4().hex[:14]}"
    body = json.dumps({"id": evt, "object": "event", "type": "charge.succeeded", "created": 1790000000,
                       "livemode": False, "data": {"object": {"id": "ch_1", "object": "charge", "amount": 4250,
                                                               "currency": "eur", "customer": "cus_9",
                                                               "status": "succeeded",
                                                               "description": "Order 1234"}}}).encode()
    r = client.post("/webhooks/stripe", content=body, headers=sign.stripe(secrets["WEBHOOK_SECRET_STRIPE"], body))
    assert r.status_code == 202, r.text
    key, event, _ = read_at(ingest_settings, r.json())
    assert (key, event["event_id"], event["delivery_id"], event["type"]) == ("cus_9", evt, evt, "charge.succeeded")
    assert event["metrics"] == {"amount": 42.5}
    assert event["occurred_at"].timestamp() == 1790000000
    assert event["attributes"]["currency"] == "eur"


def test_meter_source_maps_readings_to_metrics(sign, client, secrets, ingest_settings, read_at):
    body = json.dumps({"meter_id": "m-17", "site": "plant-2", "read_at": "2026-11-20T12:00:00+00:00",
                       "readings": {"kwh": 12.5, "voltage": 229.8}, "status": "ok"})
    r = client.post("/webhooks/meter", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_METER"], body))
    assert r.status_code == 202, r.text
    key, event, _ = read_at(ingest_settings, r.json())
    # the tenant is the source's binding, not the payload's site
    assert (key, event["type"], event["tenant"]) == ("m-17", "meter.reading", "default")
    assert event["attributes"]["site"] == "plant-2"
    assert event["metrics"] == {"kwh": 12.5, "voltage": 229.8}


def _flip(text: str, index: int) -> str:
    # a digit, not a letter: hex signatures compare case-insensitively, so b -> B would change nothing
    return text[:index] + ("1" if text[index] == "0" else "0") + text[index + 1:]


@pytest.mark.parametrize("part", ["body", "id", "timestamp", "signature"])
def test_one_changed_byte_is_refused(sign, client, secrets, part):
    body = demo_body()
    headers = sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body)
    if part == "body":
        body = body.replace("pump", "pumq")
    elif part == "id":
        headers["webhook-id"] = _flip(headers["webhook-id"], 5)
    elif part == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    else:
        headers["webhook-signature"] = _flip(headers["webhook-signature"], 10)
    r = client.post("/webhooks/demo", content=body, headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "invalid_signature"


@pytest.mark.parametrize("part", ["body", "timestamp", "signature"])
def test_stripe_one_changed_byte_is_refused(sign, client, secrets, part):
    body = json.dumps({"id": "evt_x", "type": "charge.failed", "created": 1, "data": {"object": {"id": "ch"}}})
    header = sign.stripe(secrets["WEBHOOK_SECRET_STRIPE"], body.encode())
    t, v1 = header["Stripe-Signature"].split(",")
    if part == "body":
        body = body.replace("failed", "faileD")
    elif part == "timestamp":
        t = f"t={int(t[2:]) + 1}"
    else:
        v1 = _flip(v1, 8)
    r = client.post("/webhooks/stripe", content=body, headers={**header, "Stripe-Signature": f"{t},{v1}"})
    assert r.status_code == 401


@pytest.mark.parametrize("part", ["body", "signature"])
def test_github_one_changed_byte_is_refused(sign, client, secrets, part):
    body = json.dumps({"action": "opened", "repository": {"full_name": "a/b"}}).encode()
    headers = sign.github(secrets["WEBHOOK_SECRET_GITHUB"], body)
    if part == "body":
        body = body.replace(b"opened", b"openeD")
    else:
        headers["X-Hub-Signature-256"] = _flip(headers["X-Hub-Signature-256"], 12)
    assert client.post("/webhooks/github", content=body, headers=headers).status_code == 401


def test_rotated_secret_works_beside_the_old_one(sign, client, secrets):
    body = demo_body()
    for secret in (secrets["WEBHOOK_SECRET_DEMO"], secrets["WEBHOOK_SECRET_DEMO_NEXT"]):
        assert client.post("/webhooks/demo", content=body, headers=sign.standard(secret, body)).status_code == 202
    # both signatures in one header, as a sender does during its own rotation; a foreign secret alone is refused
    headers = sign.standard(sign.whsec(), body)
    assert client.post("/webhooks/demo", content=body, headers=headers).status_code == 401
    good = sign.standard(secrets["WEBHOOK_SECRET_DEMO_NEXT"], body, headers["webhook-id"],
                            int(headers["webhook-timestamp"]))
    headers["webhook-signature"] += " " + good["webhook-signature"]
    assert client.post("/webhooks/demo", content=body, headers=headers).status_code == 202


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamp_outside_tolerance_is_refused(sign, client, secrets, skew):
    body = demo_body()
    r = client.post("/webhooks/demo", content=body,
                    headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body, timestamp=sign.now() + skew))
    assert r.status_code == 401 and "timestamp" in r.json()["detail"]


def test_replayed_delivery_answers_the_first_coordinates(sign, client, secrets):
    body = demo_body()
    headers = sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body)
    first = client.post("/webhooks/demo", content=body, headers=headers)
    again = client.post("/webhooks/demo", content=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()


async def test_concurrent_duplicates_publish_once(sign, server, secrets, ingest_settings):
    body = demo_body(stream=f"dup-{uuid.uuid4().hex}")
    headers = sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        answers = await asyncio.gather(*(c.post("/webhooks/demo", content=body, headers=headers) for _ in range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 11 + [202], codes
    assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
    # and the partition holds that stream's event once: nothing after its offset carries the same delivery id
    coordinates = answers[0].json()
    consumer = Consumer({"bootstrap.servers": ingest_settings.kafka_bootstrap_servers, "group.id": uuid.uuid4().hex})
    consumer.assign([TopicPartition(coordinates["topic"], coordinates["partition"], 0)])
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = consumer.poll(0.3)
        if msg is not None and not msg.error():
            seen.append(msg.key())
    consumer.close()
    assert seen.count(json.loads(body)["stream"].encode()) == 1


# --- the error matrix of the contract ---------------------------------------------------------------------

def test_unknown_source_is_404(client):
    r = client.post("/webhooks/nosuch", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_source"


def test_wrong_content_type_is_415(sign, client, secrets):
    body = demo_body()
    headers = {**sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body), "content-type": "text/plain"}
    r = client.post("/webhooks/demo", content=body, headers=headers)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


def test_malformed_json_is_400(sign, client, secrets):
    body = '{"stream": "x", '
    r = client.post("/webhooks/demo", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
    assert r.status_code == 400 and r.json()["error"] == "malformed_body"


@pytest.mark.parametrize("payload, field", [({"stream": "s", "tenant": "globex"}, "tenant"),
                                            ({"stream": "s", "tenant": "_shared"}, "tenant"),
                                            ({"stream": "s", "metrics": {"t": "hot"}}, "metrics.t"),
                                            ({"stream": "s", "occurred_at": "yesterday"}, "occurred_at")])
def test_unmappable_payload_is_422(sign, client, secrets, payload, field):
    body = json.dumps(payload)
    r = client.post("/webhooks/demo", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
    assert r.status_code == 422 and r.json()["error"] == "unmappable_payload"
    assert field in r.json()["detail"]


def test_body_over_the_limit_is_413_from_content_length(sign, client, secrets):
    body = demo_body(padding="x" * 300)
    r = client.post("/webhooks/tiny", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_streamed_body_over_the_limit_is_413_without_reading_the_rest(server):
    """A chunked body whose first chunk is over the limit, and whose end never comes: an answer that waited for
    the whole body would never arrive."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as s:
        chunk = b"x" * 1024
        s.sendall(b"POST /webhooks/tiny HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        answer = b""
        while b"}" not in answer:  # the whole JSON answer, however the server splits it
            data = s.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"payload_too_large" in answer


def test_rate_limit_is_429_with_retry_after(sign, client, secrets, unique):
    codes = []
    for _ in range(5):
        body = demo_body()
        r = client.post(f"/webhooks/limited-{unique}", content=body,
                        headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
        codes.append(r.status_code)
    assert codes == [202, 202, 202, 429, 429]
    assert r.json()["error"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 60


def test_metrics_count_outcomes_and_verification_failures(client):
    text = client.get("/metrics").text
    assert 'ingest_requests_total{outcome="accepted",source="demo"}' in text
    assert 'ingest_verification_failures_total{reason="signature",source="demo"}' in text
    assert 'ingest_verification_failures_total{reason="timestamp",source="demo"}' in text
    assert "ingest_publish_duration_seconds_bucket" in text


def test_ready_when_dependencies_answer(client):
    assert client.get("/readyz").json()["status"] == "ready"
