"""notify's API as an attacker or a careless operator would use it: authorization on every route, tenants sealed
from each other (silences and deduplication), pathological regular expressions, oversized bodies, and
schemathesis over the OpenAPI with valid credentials. Against the real Kafka, registry and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from notify.routing import Matcher
from platform_common.testing import free_port
from support.authz import authz_cases, check, concrete

PUBLIC = {"/healthz", "/readyz", "/metrics"}


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def silence(value: str = "s-.*", name: str = "stream", **extra) -> dict:
    return {"matchers": [{"name": name, "value": value, "isRegex": True}], "endsAt": in_hours(1),
            "comment": "maintenance", **extra}


# --- authorization matrix ------------------------------------------------------------------------------------

async def test_every_route_answers_the_documented_status_for_every_credential(notify, api_keys, anonymous):
    cases = authz_cases(notify.app, api_keys.matrix, PUBLIC)
    assert {c.path for c in cases} >= {"/api/v2/silences", "/api/v2/silence/{silence_id}"}
    for case in cases:
        headers = {"Authorization": f"Bearer {case.token}"} if case.token else {}
        body = silence() if case.method == "POST" else None
        r = await anonymous.request(case.method, concrete(case.path), json=body, headers=headers)
        check(r.status_code, r.json() if r.content else None, case)
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == "Bearer"


def test_a_route_without_a_policy_fails_the_matrix(notify, api_keys):
    @notify.app.get("/api/v2/forgotten")
    async def forgotten():
        return {}
    with pytest.raises(AssertionError, match="/api/v2/forgotten has no authorization policy"):
        authz_cases(notify.app, api_keys.matrix, PUBLIC)


# --- tenants ---------------------------------------------------------------------------------------------------

async def test_a_tenants_silence_mutes_only_its_own_alerts_and_is_seen_only_by_it(
        notify, api, anonymous, api_keys, receivers, produce, make_alert, wait_for, db, notify_settings):
    globex = api_keys.headers("globex")
    # globex silences everything it can name: its own tenant's alerts, not acme's
    made = await anonymous.post("/api/v2/silences", json=silence(".*"), headers=globex)
    assert made.status_code == 200, made.text
    theirs = made.json()["silenceID"]
    mine = (await api.post("/api/v2/silences", json=silence("s-mine-.*"))).json()["silenceID"]

    assert [s["id"] for s in (await api.get("/api/v2/silences")).json()] == [mine]
    assert [s["id"] for s in (await anonymous.get("/api/v2/silences", headers=globex)).json()] == [theirs]
    for method in ("GET", "DELETE"):
        r = await anonymous.request(method, f"/api/v2/silence/{mine}", headers=globex)
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
    assert (await api.get(f"/api/v2/silence/{mine}")).json()["status"]["state"] == "active"

    acme_alert, globex_alert = make_alert("s-open"), make_alert("s-open", 1, tenant="globex")
    await produce(acme_alert, globex_alert)
    await wait_for(lambda: any(e["dedup_key"] == acme_alert["dedup_key"] for e in receivers.accepted("pagerduty")))
    await wait_for(lambda: db.fetchval(f"select count(*) = 2 from {notify_settings.notify_db_schema}.attempts "
                                       f"where receiver = 'pd'"))
    outcomes = {r["alert_id"]: (r["outcome"], r["silence"]) for r in await db.fetch(
        f"select alert_id, outcome, silence_id::text as silence from {notify_settings.notify_db_schema}.attempts "
        f"where receiver = 'pd'")}
    assert outcomes == {acme_alert["alert_id"]: ("delivered", None), globex_alert["alert_id"]: ("silenced", theirs)}


async def test_the_same_alert_key_in_two_tenants_is_two_alerts(notify, produce, make_alert, wait_for, db,
                                                               notify_settings):
    acme = make_alert("s-shared-key", severity="warning", dedup_key="same-key")
    globex = {**make_alert("s-shared-key", severity="warning", dedup_key="same-key"), "tenant": "globex"}
    await produce(acme, globex)
    await wait_for(lambda: db.fetchval(f"select count(*) = 2 from {notify_settings.notify_db_schema}.deliveries "
                                       f"where dedup_key = 'same-key' and receiver = 'slack-ok'"))
    rows = await db.fetch(f"select tenant, alert_id from {notify_settings.notify_db_schema}.deliveries "
                          f"where dedup_key = 'same-key' and receiver = 'slack-ok'")
    assert sorted(map(tuple, rows)) == sorted([("acme", acme["alert_id"]), ("globex", globex["alert_id"])])
    assert not await db.fetchval(f"select count(*) from {notify_settings.notify_db_schema}.attempts "
                                 f"where dedup_key = 'same-key' and outcome = 'deduplicated'")


# --- what an operator may ask for -----------------------------------------------------------------------------

async def test_the_creator_is_the_key_not_the_body(api, api_keys):
    made = await api.post("/api/v2/silences", json=silence(createdBy="somebody-else"))
    [listed] = [s for s in (await api.get("/api/v2/silences")).json() if s["id"] == made.json()["silenceID"]]
    assert listed["createdBy"] == "acme"  # the key id


async def test_silences_are_capped_in_duration(api, notify_settings):
    too_long = await api.post("/api/v2/silences", json={**silence(), "endsAt": in_hours(24 * 7 + 1)})
    assert (too_long.status_code, too_long.json()["error"]) == (400, "bad_silence")
    far_start = await api.post("/api/v2/silences", json={**silence(), "startsAt": in_hours(24 * 30),
                                                          "endsAt": in_hours(24 * 30 + 1)})
    assert far_start.status_code == 400
    assert (await api.post("/api/v2/silences", json={**silence(), "endsAt": in_hours(24 * 7 - 1)})).status_code == 200


def test_a_pathological_regex_matches_in_linear_time():
    """`(a+)+b` backtracks exponentially in Python's `re` (each two more characters take about four times as
    long); under RE2 a 100,000-character label is matched in milliseconds."""
    matcher = Matcher(name="stream", value="(a+)+b", isRegex=True)
    started = time.perf_counter()
    assert matcher.matches({"stream": "a" * 100_000 + "c"}) is False
    assert time.perf_counter() - started < 0.5
    assert matcher.matches({"stream": "a" * 1000 + "b"}) is True


async def test_regexes_re2_cannot_bound_are_refused(api):
    for value in [r"(a)\1", "(?=a)a", "x" * 2000]:
        r = await api.post("/api/v2/silences", json=silence(value))
        assert (r.status_code, r.json()["error"]) == (400, "bad_request"), value
    many = {**silence(), "matchers": [{"name": f"l{i}", "value": "v"} for i in range(33)]}
    assert (await api.post("/api/v2/silences", json=many)).status_code == 400


async def test_a_pathological_silence_does_not_stall_the_intake(
        api, produce, make_alert, wait_for, db, notify_settings):
    assert (await api.post("/api/v2/silences", json=silence("(a+)+b"))).status_code == 200
    alert = make_alert("a" * 5000 + "c")  # exponential under backtracking; RE2 is linear
    started = time.monotonic()
    await produce(alert)
    await wait_for(lambda: db.fetchval(f"select count(*) > 0 from {notify_settings.notify_db_schema}.deliveries "
                                       f"where alert_id = $1", alert["alert_id"]), timeout=15)
    assert time.monotonic() - started < 15


async def test_request_bodies_are_size_limited(notify, api, notify_settings):
    padded = {**silence(), "comment": "x" * (notify_settings.notify_max_body_bytes + 1)}
    r = await api.post("/api/v2/silences", json=padded)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")


async def test_a_streamed_body_is_cut_off_at_the_limit(notify, api_keys, notify_settings):
    """Chunked, with no Content-Length: refused once the limit is passed, without waiting for the end."""
    port = free_port()
    server = asyncio.create_task(notify.serve(port))
    try:
        while not (notify.server and notify.server.started):
            await asyncio.sleep(0.05)

        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                chunk = b"x" * (notify_settings.notify_max_body_bytes + 10)
                s.sendall(b"POST /api/v2/silences HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          b"Authorization: Bearer " + api_keys.tokens["acme"].encode() + b"\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                answer = b""
                while b"}" not in answer:
                    data = s.recv(4096)
                    if not data:
                        break
                    answer += data
                return answer
        answer = await asyncio.to_thread(send)
        assert answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer, answer[:200]
    finally:
        notify.server.should_exit = True
        await server


# --- schemathesis ----------------------------------------------------------------------------------------------

async def test_the_api_never_answers_5xx_to_generated_requests_with_valid_credentials(notify, api_keys):
    port = free_port()
    server = asyncio.create_task(notify.serve(port))
    try:
        while not (notify.server and notify.server.started):
            await asyncio.sleep(0.05)
        # schemathesis is synchronous: it runs in a thread while this loop serves the requests
        await asyncio.to_thread(run_schemathesis, f"http://127.0.0.1:{port}", api_keys.tokens["acme"])
    finally:
        notify.server.should_exit = True
        await server


def run_schemathesis(url: str, token: str) -> None:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/api/v2/silences" for op in operations)
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=40 if operation.method in ("post", "delete") else 15, deadline=None,
                      suppress_health_check=list(HealthCheck), database=None)
            def check_case(case):
                response = case.call(base_url=url, session=session)
                assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} " \
                                                   f"{response.text[:300]}"
                assert response.status_code not in (401, 403), response.text
                if response.status_code >= 400:
                    assert set(response.json()) >= {"error", "detail"}, response.text
            check_case()
