"""One receiver's client against the local Slack receiver: circuit breaker, permanent errors, Retry-After dates."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from notify.delivery import DeliveryFailed, ReceiverClient, circuit_breakers, retry_after_seconds
from notify.routing import Receiver


@pytest.fixture
async def client(receivers, run_id):
    receiver = Receiver(name=f"slack-{run_id}", type="slack", webhook_url_env="NOTIFY_TEST_SLACK_BROKEN")
    async with httpx.AsyncClient() as http:
        yield ReceiverClient(receiver, http, circuit_breakers(threshold=3, ttl=30), max_attempts=5,
                             backoff_initial=0.01, backoff_max=0.05)


async def test_circuit_opens_after_threshold_and_stops_calling_the_receiver(client, receivers):
    receivers.fail("slack/broken")
    outcomes = []

    async def on_attempt(outcome, attempt, code, error):
        outcomes.append((outcome, code, error))

    with pytest.raises(DeliveryFailed, match="is open"):
        await client.send(client.receiver.secret(), {"text": "hello"}, on_attempt)
    assert len(receivers.calls["slack/broken"]) == 3  # attempts 4 and 5 never reached it
    assert [o[0] for o in outcomes] == ["retrying"] * 4 + ["failed"]
    assert outcomes[2][1] == 500 and "is open" in outcomes[3][2]
    assert REGISTRY.get_sample_value("notify_circuit_open", {"receiver": client.receiver.name}) == 1


async def test_rejected_request_is_not_retried(client, receivers):
    outcomes = []

    async def on_attempt(outcome, attempt, code, error):
        outcomes.append((outcome, code))

    with pytest.raises(DeliveryFailed, match="HTTP 400"):
        await client.send(client.receiver.secret(), {"blocks": [{"type": "divider"}] * 51}, on_attempt)
    assert outcomes == [("failed", 400)]


def test_retry_after_takes_seconds_or_an_http_date():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 < retry_after_seconds(in_a_minute) <= 60
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
