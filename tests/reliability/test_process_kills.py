"""kill -9 each service in turn while signed webhooks flow: nothing answered 202 is lost, nothing is stored twice,
every alert is delivered to its receivers exactly once, and the DLQs hold only what was meant to fail."""

from functools import partial

import pytest
from support.faults import run_with_faults
from support.platform import SPIKE_AT

SERVICES = ("ingest-webhook", "enrich", "anomaly", "notify", "reports")


def kills(platform, victims: tuple[str, ...]) -> list:
    return [partial(platform.restart, victim) for victim in victims]


async def test_kill_enrich_anomaly_and_notify_mid_flow(start_platform, settings, run_id):
    """The fast part, in `make test`."""
    platform = start_platform(SERVICES)
    await run_with_faults(platform, settings, run_id, streams=2, points=SPIKE_AT + 60, rate=100,
                          faults=kills(platform, ("enrich", "anomaly", "notify")),
                          fault="kill -9 enrich, anomaly, notify")


@pytest.mark.chaos
async def test_kill_every_service_in_turn(start_platform, settings, run_id):
    platform = start_platform((*SERVICES, "rag"))
    await run_with_faults(platform, settings, run_id, streams=8, points=SPIKE_AT + 80, rate=150,
                          faults=kills(platform, ("ingest-webhook", "enrich", "anomaly", "rag", "notify", "reports")),
                          fault="kill -9 each service in turn")


@pytest.mark.chaos
async def test_the_duplicate_check_fails_on_the_at_least_once_path(start_platform, settings, run_id):
    """The same check against enrich and anomaly on the previous path (commit after processing, outputs outside a
    transaction): records produced after the last commit are produced again after each kill, and the check sees
    them. Proves the exactly-once figures above come from a check that can fail."""
    platform = start_platform(SERVICES, ENRICH_PROCESSING_GUARANTEE="at_least_once",
                              ANOMALY_PROCESSING_GUARANTEE="at_least_once")
    with pytest.raises(AssertionError, match="repeated records on events.enriched.v1"):
        await run_with_faults(platform, settings, run_id, streams=2, points=SPIKE_AT + 60, rate=100,
                              faults=kills(platform, ("enrich", "enrich", "enrich")),
                              fault="kill -9 enrich x3 on the at-least-once path (expected to repeat)")
