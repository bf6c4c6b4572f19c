"""Real publishers' payloads accepted as they send them, and every event bound to the tenant its source serves.

Against the real Redis and Kafka through the running app, except the configuration checks, which are pure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid

import pytest
import redis

from ingest_webhook.app import create_app
from ingest_webhook.settings import DEFAULT_SOURCES
from ingest_webhook.signatures import verify_github
from ingest_webhook.sources import SourceConfigError, load_sources

# GitHub's own example: https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
# ("Testing the webhook payload validation")
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


# --- secrets as given ---------------------------------------------------------------------------------------

def test_githubs_documented_example_verifies_with_the_secret_from_the_environment(secrets):
    sources = load_sources(DEFAULT_SOURCES, {**secrets, "WEBHOOK_SECRET_GITHUB": GITHUB_SECRET})
    assert sources["github"].keys == (GITHUB_SECRET.encode(),)  # one secret, spaces and all
    headers = {"x-hub-signature-256": GITHUB_SIGNATURE, "x-github-delivery": "72d3162e"}
    verified = verify_github(headers, GITHUB_BODY, sources["github"].keys, 300, 0)
    assert verified.delivery_id == "72d3162e"


def test_githubs_documented_example_passes_the_intakes_signature_check(secrets, ingest_settings, serve):
    """Through HTTP: the example body is not JSON, so a verified request stops at 400, an unverified one at 401."""
    sources = load_sources(DEFAULT_SOURCES, {**secrets, "WEBHOOK_SECRET_GITHUB": GITHUB_SECRET})
    with serve(create_app(ingest_settings, sources)) as server:
        import httpx
        headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": str(uuid.uuid4()),
                   "X-GitHub-Event": "ping", "Content-Type": "application/json"}
        good = httpx.post(f"{server.url}/webhooks/github", content=GITHUB_BODY, headers=headers)
        bad = httpx.post(f"{server.url}/webhooks/github", content=b"Hello, World?", headers=headers)
    assert (good.status_code, good.json()["error"]) == (400, "malformed_body")
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid_signature")


def test_a_rotated_in_secret_comes_from_next_variables_never_from_a_second_word(secrets):
    environ = {**secrets, "WEBHOOK_SECRET_GITHUB": "old secret", "WEBHOOK_SECRET_GITHUB_NEXT": "new secret"}
    assert load_sources(DEFAULT_SOURCES, environ)["github"].keys == (b"old secret", b"new secret")
    environ = {**secrets, "WEBHOOK_SECRET_GITHUB": "one two"}
    assert load_sources(DEFAULT_SOURCES, environ)["github"].keys == (b"one two",)


# --- tenants bound to sources ----------------------------------------------------------------------------------

def _sources_file(tmp_path, body: str):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  s:\n    secrets: [WEBHOOK_SECRET_DEMO]\n" + body)
    return path


@pytest.mark.parametrize("body, message", [
    ("    mapping: '{\"stream_id\": stream}'\n", "bound to its tenants"),
    ("    tenant: _shared\n    mapping: '{\"stream_id\": stream}'\n", "_shared"),
    ("    tenant: {field: t, allowed: [acme, _shared]}\n    mapping: '{\"stream_id\": stream}'\n", "_shared"),
    ("    tenant: Not A Slug\n    mapping: '{\"stream_id\": stream}'\n", "invalid tenant"),
    ("    tenant: acme\n    mapping: '{\"stream_id\": stream, \"tenant\": t}'\n", "names a tenant"),
])
def test_a_source_must_be_bound_to_valid_tenants_and_its_mapping_cannot_name_one(tmp_path, secrets, body, message):
    with pytest.raises(SourceConfigError, match=message):
        load_sources(_sources_file(tmp_path, body), secrets)


def test_a_signed_field_names_only_the_tenants_the_source_allows(tmp_path, secrets):
    path = _sources_file(tmp_path, "    tenant: {field: site, allowed: {plant-1: acme, plant-2: globex}}\n"
                                   "    mapping: '{\"stream_id\": stream, \"type\": \"t\"}'\n")
    source = load_sources(path, secrets)["s"]

    def tenant(payload):
        return source.mapping.to_event(payload, source="s", delivery_id="d", received_at=0, signed_at=None,
                                       raw_payload="{}", headers={}, tenant=source.tenant,
                                       default_stream_id="s")["tenant"]
    assert tenant({"stream": "x", "site": "plant-2"}) == "globex"
    for refused in ({"stream": "x", "site": "plant-3"}, {"stream": "x", "site": "globex"}, {"stream": "x"}):
        with pytest.raises(Exception, match="tenant"):
            tenant(refused)


def test_a_sender_cannot_choose_its_tenant(sign, client, secrets, ingest_settings, read_at):
    body = json.dumps({"stream": "line-9", "text": "ok", "tenant": "acme"})
    r = client.post("/webhooks/demo", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
    assert r.status_code == 202 and read_at(ingest_settings, r.json())[1]["tenant"] == "acme"  # an allowed one
    for tenant in ("globex", "_shared"):
        body = json.dumps({"stream": "line-9", "text": "ok", "tenant": tenant})
        r = client.post("/webhooks/demo", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
        assert (r.status_code, r.json()["error"]) == (422, "unmappable_payload"), tenant
    # GitHub's source is bound to one tenant: a payload's own "tenant" field changes nothing
    body = json.dumps({"action": "opened", "tenant": "acme", "repository": {"full_name": "o/tenancy"}}).encode()
    r = client.post("/webhooks/github", content=body, headers=sign.github(secrets["WEBHOOK_SECRET_GITHUB"], body))
    assert r.status_code == 202 and read_at(ingest_settings, r.json())[1]["tenant"] == "default"


# --- Stripe as it sends -------------------------------------------------------------------------------------

def _stripe_charge(currency: str, amount: int, **charge) -> bytes:
    return json.dumps({
        "id": f"evt_{uuid.uuid4().hex[:20]}", "object": "event", "type": "charge.succeeded", "created": 1790000000,
        "livemode": False, "api_version": "2024-06-20",
        "data": {"object": {"id": f"ch_{uuid.uuid4().hex[:20]}", "object": "charge", "amount": amount,
                            "amount_refunded": 0, "currency": currency, "status": "succeeded",
                            "customer": "cus_9", "description": "Order 77", **charge}}}).encode()


def test_a_stripe_guest_charge_with_null_customer_and_description_is_accepted(sign, client, secrets,
                                                                              ingest_settings, read_at):
    body = _stripe_charge("usd", 1999, customer=None, description=None)
    r = client.post("/webhooks/stripe", content=body, headers=sign.stripe(secrets["WEBHOOK_SECRET_STRIPE"], body))
    assert r.status_code == 202, r.text
    key, event, _ = read_at(ingest_settings, r.json())
    charge_id = json.loads(body)["data"]["object"]["id"]
    assert key == event["stream_id"] == charge_id  # no customer: the charge's own stream
    assert event["text"] == {} and event["metrics"]["amount"] == 19.99


def test_an_event_whose_mapping_finds_no_stream_goes_to_the_sources_stream(sign, client, secrets, ingest_settings,
                                                                           read_at):
    body = json.dumps({"text": "no stream named"})
    r = client.post("/webhooks/demo", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
    assert r.status_code == 202, r.text
    assert read_at(ingest_settings, r.json())[0] == "demo"


@pytest.mark.parametrize("currency, amount, expected", [("jpy", 5000, 5000.0), ("KRW", 12000, 12000.0),
                                                        ("eur", 4250, 42.5), ("bhd", 1230, 1.23),
                                                        ("huf", 150000, 1500.0)])
def test_amounts_keep_their_currencys_decimals(shipped_sources, currency, amount, expected):
    payload = json.loads(_stripe_charge(currency, amount, amount_refunded=amount))
    stripe = shipped_sources["stripe"]
    event = stripe.mapping.to_event(payload, source="stripe", delivery_id=None, received_at=0, signed_at=None,
                                    raw_payload="{}", headers={}, tenant=stripe.tenant, default_stream_id="stripe")
    assert event["metrics"] == {"amount": expected, "amount_refunded": expected}


@pytest.fixture(scope="module")
def shipped_sources(secrets):
    return load_sources(DEFAULT_SOURCES, secrets)


# --- JSON as RFC 8259 has it ------------------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_malformed_json(sign, client, secrets, number):
    body = f'{{"stream": "s", "metrics": {{"x": {number}}}}}'
    r = client.post("/webhooks/demo", content=body, headers=sign.standard(secrets["WEBHOOK_SECRET_DEMO"], body))
    assert (r.status_code, r.json()["error"]) == (400, "malformed_body")


# --- GitHub replays ----------------------------------------------------------------------------------------------

def test_a_replayed_github_body_with_a_fresh_delivery_id_answers_the_first_coordinates(sign, client, secrets,
                                                                                      ingest_settings, read_at):
    body = json.dumps({"action": "opened", "issue": {"title": f"replay {uuid.uuid4()}"},
                       "repository": {"full_name": "o/replay"}}).encode()
    first = client.post("/webhooks/github", content=body, headers=sign.github(secrets["WEBHOOK_SECRET_GITHUB"], body))
    # a fresh delivery id and another event name: unsigned headers, so neither makes it a new event
    again = client.post("/webhooks/github", content=body,
                        headers=sign.github(secrets["WEBHOOK_SECRET_GITHUB"], body, event="deployment"))
    assert (first.status_code, again.status_code) == (202, 200), again.text
    assert again.json() == first.json()
    # remembered for the source's window of days, not the 600 s of a signed timestamp
    digest = hmac.new(secrets["WEBHOOK_SECRET_GITHUB"].encode(), body, hashlib.sha256).hexdigest()
    ttl = redis.Redis.from_url(ingest_settings.redis_url).ttl(f"ingest:delivery:github:sha256:{digest}")
    assert 6 * 86400 < ttl <= 7 * 86400
    _, event, _ = read_at(ingest_settings, first.json())
    assert event["type"] == "issues.opened"


def test_the_github_window_is_configured_in_days_and_other_schemes_keep_their_signed_window(tmp_path, secrets):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n"
                    "  gh:\n    scheme: github\n    secrets: [WEBHOOK_SECRET_GITHUB]\n    tenant: acme\n"
                    "    dedup_window_days: 0.5\n    mapping: '{\"type\": \"x\"}'\n"
                    "  std:\n    secrets: [WEBHOOK_SECRET_DEMO]\n    tenant: acme\n    tolerance_seconds: 120\n"
                    "    mapping: '{\"type\": \"x\"}'\n")
    loaded = load_sources(path, secrets)
    assert (loaded["gh"].dedup_seconds, loaded["std"].dedup_seconds) == (43200, 240)


# --- development secrets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_development_secrets_are_refused_unless_the_service_listens_on_loopback(host):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_SECRET_")}
    done = subprocess.run([sys.executable, "-m", "ingest_webhook"],
                          env={**clean, "INGEST_DEV_SECRETS": "1", "INGEST_HOST": host, "INGEST_PORT": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "loopback" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_development_secrets_default_to_loopback():
    from ingest_webhook.settings import IngestSettings
    assert IngestSettings(ingest_dev_secrets=True).listen_host == "127.0.0.1"
    assert IngestSettings().listen_host == "0.0.0.0"


# --- authorization ----------------------------------------------------------------------------------------------

def test_the_intake_has_no_route_outside_its_signatures_and_the_ops_endpoints(ingest_settings, sources):
    """The webhook route is authenticated by its signatures (above), the ops endpoints are public; any other route
    added without an API-key policy fails the authorization matrix."""
    from support.authz import Keys, authz_cases

    app = create_app(ingest_settings, sources)
    public = {"/webhooks/{source}", "/healthz", "/readyz", "/metrics"}
    assert authz_cases(app, Keys.create(), public) == []

    @app.get("/debug/sources")
    async def leak():
        return {}
    with pytest.raises(AssertionError, match="/debug/sources has no authorization policy"):
        authz_cases(app, Keys.create(), public)
