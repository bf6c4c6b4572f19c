"""The bad-input matrix at ingest-webhook: each case gets its documented status and JSON error, and the
service's memory stays bounded while it refuses them."""

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from platform_common.testing import ServiceProcess, free_port
from standardwebhooks import Webhook

SECRET = "whsec_ZGVtby1kZXZlbG9wbWVudC1zZWNyZXQtMzJieXRlcyE="
MAX_BODY = 262144


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("front-door")
    port = free_port()
    proc = ServiceProcess("ingest-webhook", "ingest_webhook", port, {
        "INGEST_PORT": str(port), "INGEST_TOPIC": f"events.raw.v1.frontdoor-{port}", "WEBHOOK_SECRET_DEMO": SECRET,
        "INGEST_DEV_SECRETS": "1", "INGEST_BODY_TIMEOUT": "2", "STACK_DATA_DIR": str(tmp)}, tmp)
    proc.start()
    proc.wait_ready()
    yield proc
    proc.stop()


def signed(body: bytes | str, msg_id: str, at: datetime | None = None) -> dict:
    at = at or datetime.now(timezone.utc)
    if isinstance(body, str):
        signature = Webhook(SECRET).sign(msg_id, at, body)
    else:  # bytes that are not UTF-8: the Standard Webhooks scheme by hand, as the libraries only sign text
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{int(at.timestamp())}.".encode() + body, hashlib.sha256).digest()
        signature = "v1," + base64.b64encode(mac).decode()
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature}


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def url(proc, source="demo") -> str:
    return f"http://127.0.0.1:{proc.port}/webhooks/{source}"


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code and body["detail"], body
    assert "Traceback" not in answer.text


def valid_body(n: str) -> str:
    return json.dumps({"id": n, "stream": "front-door", "metrics": {"v": 1.0}, "text": "hello"})


def test_bad_input_matrix(ingest):
    now = datetime.now(timezone.utc)
    body = valid_body("m-1")
    with httpx.Client(timeout=10) as c:
        assert_error(c.post(url(ingest, "nope"), content=body, headers=signed(body, "a")), 404, "unknown_source")
        assert_error(c.post(url(ingest), content=body, headers={**signed(body, "b"), "content-type": "text/plain"}),
                     415, "unsupported_media_type")
        assert_error(c.post(url(ingest), content=body, headers={"content-type": "application/json"}),
                     401, "invalid_signature")
        wrong = {**signed(body, "c"), "webhook-signature": "v1,ZmFrZQ=="}
        assert_error(c.post(url(ingest), content=body, headers=wrong), 401, "invalid_signature")
        stale = signed(body, "d", now - timedelta(minutes=10))
        assert_error(c.post(url(ingest), content=body, headers=stale), 401, "invalid_signature")
        future = signed(body, "e", now + timedelta(minutes=10))
        assert_error(c.post(url(ingest), content=body, headers=future), 401, "invalid_signature")
        invalid_utf8 = b'{"id": "f", "stream": "s", "text": "\xff\xfe"}'
        assert_error(c.post(url(ingest), content=invalid_utf8, headers=signed(invalid_utf8, "f")),
                     400, "malformed_body")
        nested = "[" * 100_000 + "]" * 100_000
        assert_error(c.post(url(ingest), content=nested, headers=signed(nested, "g")), 400, "malformed_body")
        huge = "x" * (MAX_BODY + 1)
        assert_error(c.post(url(ingest), content=huge, headers=signed(huge, "h")), 413, "payload_too_large")

        def chunked():
            for _ in range(100):
                yield b"x" * 8192
        assert_error(c.post(url(ingest), content=chunked(), headers=signed("", "i")), 413, "payload_too_large")

        # a delivery id of this run's own: Redis remembers ids for the replay window, beyond one test run
        delivery = f"replayed-{uuid.uuid4().hex}"
        first = c.post(url(ingest), content=body, headers=signed(body, delivery))
        assert first.status_code == 202, first.text
        again = c.post(url(ingest), content=body, headers=signed(body, delivery))
        assert again.status_code == 200 and again.json() == first.json()


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return sock


def test_huge_declared_body_is_refused_without_reading_it(ingest):
    head = (f"POST /webhooks/demo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {500 * 1024 * 1024}")
    with raw_request(ingest.port, head, b"{" * 1024) as sock:
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer


def test_slow_loris_body_times_out_and_does_not_block_others(ingest):
    head = "POST /webhooks/demo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4096"
    slow = [raw_request(ingest.port, head, b"{") for _ in range(50)]
    try:
        started = time.monotonic()
        body = valid_body("after-loris")
        answer = httpx.post(url(ingest), content=body, headers=signed(body, f"loris-{time.time_ns()}"), timeout=10)
        assert answer.status_code == 202, answer.text
        assert time.monotonic() - started < 5
        for sock in slow[:5]:  # trickle, then wait for the server's verdict
            sock.sendall(b" ")
        verdicts = []
        for sock in slow[:5]:
            sock.settimeout(15)
            verdicts.append(sock.recv(4096).decode(errors="replace"))
        assert all(v.startswith("HTTP/1.1 408") for v in verdicts), verdicts
        assert time.monotonic() - started < 15
    finally:
        for sock in slow:
            sock.close()


def test_memory_stays_bounded_under_bad_input(ingest):
    huge = "x" * (MAX_BODY - 1024)
    nested = "[" * 50_000 + "]" * 50_000
    with httpx.Client(timeout=10) as c:
        def round_of_bad_input(i: int) -> None:
            c.post(url(ingest), content=huge, headers={"content-type": "application/json"})
            c.post(url(ingest), content=nested, headers=signed(nested, f"n-{i}"))
            c.post(url(ingest, f"unknown-{i}"), content="{}", headers=signed("{}", f"u-{i}"))
        for i in range(100):  # warm up allocator pools and caches
            round_of_bad_input(i)
        before = rss_kib(ingest.proc.pid)
        for i in range(100, 1100):
            round_of_bad_input(i)
        after = rss_kib(ingest.proc.pid)
    assert after - before < 20 * 1024, f"RSS grew from {before} KiB to {after} KiB"
