"""Pure logic: the sources file, secrets and the start-up refusal, the shipped mappings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ingest_webhook.mapping import MappingError
from ingest_webhook.settings import DEFAULT_SOURCES
from ingest_webhook.signatures import VerificationError, verify_standard
from ingest_webhook.sources import SourceConfigError, dev_secret, load_sources, missing_dev_secrets, read_config


def test_every_shipped_source_loads_with_its_secrets(secrets):
    sources = load_sources(DEFAULT_SOURCES, secrets)
    assert set(sources) == {"demo", "github", "stripe", "meter"}
    assert {s.scheme for s in sources.values()} == {"standard-webhooks", "github", "stripe"}
    assert len(sources["demo"].keys) == 2  # current + rotated-in
    assert sources["github"].keys == (secrets["WEBHOOK_SECRET_GITHUB"].encode(),)


def test_an_unset_secret_refuses_the_sources(secrets):
    environ = {k: v for k, v in secrets.items() if k != "WEBHOOK_SECRET_STRIPE"}
    with pytest.raises(SourceConfigError, match="WEBHOOK_SECRET_STRIPE is unset"):
        load_sources(DEFAULT_SOURCES, environ)


def test_a_malformed_standard_webhooks_secret_is_refused(secrets):
    with pytest.raises(SourceConfigError, match="whsec_"):
        load_sources(DEFAULT_SOURCES, {**secrets, "WEBHOOK_SECRET_DEMO": "whsec_not base64!"})


def test_development_secrets_are_fixed_and_cover_only_what_is_missing(secrets):
    environ = {k: v for k, v in secrets.items() if k != "WEBHOOK_SECRET_DEMO"}
    missing = missing_dev_secrets(read_config(DEFAULT_SOURCES), environ)
    assert missing == {"WEBHOOK_SECRET_DEMO": dev_secret("demo", "standard-webhooks")}
    assert load_sources(DEFAULT_SOURCES, {**environ, **missing})["demo"].keys


def _run_service(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_SECRET_")}
    return subprocess.run([sys.executable, "-m", "ingest_webhook"], env={**clean, "INGEST_PORT": "1", **env},
                          capture_output=True, text=True, timeout=60)


def test_the_service_refuses_to_start_with_one_line_and_exit_code_2(secrets):
    done = _run_service({k: v for k, v in secrets.items() if k != "WEBHOOK_SECRET_GITHUB"})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "WEBHOOK_SECRET_GITHUB is unset" in done.stderr
    assert "Traceback" not in done.stderr


def test_sources_file_errors_are_one_line(tmp_path, secrets):
    bad = tmp_path / "sources.yaml"
    bad.write_text("sources:\n  x:\n    secrets: [WEBHOOK_SECRET_DEMO]\n    mapping: '{\"a\": '\n")
    with pytest.raises(SourceConfigError) as e:
        load_sources(bad, secrets)
    assert "\n" not in str(e.value) and "'x'" in str(e.value)


@pytest.fixture(scope="module")
def shipped(secrets):
    return load_sources(DEFAULT_SOURCES, secrets)


def _event(source, payload, delivery_id="d-1", headers=None):
    return source.mapping.to_event(payload, source=source.name, delivery_id=delivery_id, received_at=1_000,
                                   signed_at=None, raw_payload="{}", headers=headers or {}, tenant=source.tenant,
                                   default_stream_id=source.default_stream_id)


def test_demo_mapping_defaults(shipped):
    event = _event(shipped["demo"], {"stream": "s", "text": {"a": "x", "n": 3, "gone": None}, "metrics": {"m": 2}})
    assert event["type"] == "demo.event" and event["tenant"] == "default" and event["occurred_at"] == 1_000
    assert event["text"] == {"a": "x", "n": "3"} and event["metrics"] == {"m": 2.0}
    # no id in the payload: a stable id derived from source and delivery id
    assert event["event_id"] == _event(shipped["demo"], {"stream": "other"})["event_id"]
    assert event["event_id"] != _event(shipped["demo"], {"stream": "s"}, delivery_id="d-2")["event_id"]


@pytest.mark.parametrize("payload", [[1, 2], {"stream": {"nested": 1}}, {"stream": "s", "metrics": {"x": True}},
                                     {"stream": "s", "tenant": "globex"}, {"stream": "s", "tenant": ["acme"]},
                                     {"stream": "s", "text": {"t": ["list"]}}, {"stream": "s", "metrics": [1]}])
def test_demo_mapping_refuses_what_the_event_cannot_hold(shipped, payload):
    with pytest.raises(MappingError):
        _event(shipped["demo"], payload)


def test_github_push_maps_commits(shipped):
    event = _event(shipped["github"], {"ref": "refs/heads/main", "repository": {"full_name": "o/r"},
                                        "commits": [{"message": "fix a"}, {"message": "fix b"}],
                                        "head_commit": {"timestamp": "2026-01-02T03:04:05+01:00"}},
                   headers={"x-github-event": "push"})
    assert (event["type"], event["stream_id"]) == ("push", "o/r")
    assert event["text"] == {"commits": "fix a\nfix b"} and event["metrics"] == {"commits": 2.0}
    assert event["occurred_at"] == 1767319445000


def test_stripe_mapping_takes_the_delivery_id_from_the_signed_body(shipped):
    event = _event(shipped["stripe"], {"id": "evt_1", "type": "invoice.paid", "created": 1,
                                        "data": {"object": {"id": "in_1", "amount": 999}}}, delivery_id=None)
    assert (event["delivery_id"], event["stream_id"], event["metrics"]) == ("evt_1", "in_1", {"amount": 9.99})
    with pytest.raises(MappingError, match="delivery_id"):
        _event(shipped["stripe"], {"type": "x", "data": {"object": {"id": "in_1"}}}, delivery_id=None)


def test_standard_verifier_needs_every_header():
    with pytest.raises(VerificationError) as e:
        verify_standard({"webhook-id": "x", "webhook-timestamp": "1"}, b"{}", (b"k",), 300, 1)
    assert e.value.reason == "missing_header"
