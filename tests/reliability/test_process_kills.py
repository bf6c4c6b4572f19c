"""kill -9 each service in turn while signed webhooks flow: nothing answered 202 is lost, nothing is stored twice,
every alert is delivered to its receivers exactly once, and the DLQs hold only what was meant to fail."""

import time
from functools import partial

import httpx
import pytest
from support.faults import run_with_faults
from support.platform import SPIKE_AT, Platform

from platform_common.testing import consumer_lag, metric_sum

SERVICES = ("ingest-webhook", "enrich", "anomaly", "notify", "reports")


def kills(platform, victims: tuple[str, ...]) -> list:
    return [partial(platform.restart, victim) for victim in victims]


def kill_enrich_mid_batch(platform: Platform, settings) -> float:
    """kill -9 enrich once it is handling records with more behind them (a batch is in flight), then start it."""
    group, topic = platform.groups["enrich"]

    def handled() -> float:
        return metric_sum(httpx.get(f"http://127.0.0.1:{platform.ports['enrich']}/metrics", timeout=10).text,
                          "enrich_events_total")
    before, deadline = handled(), time.monotonic() + 120
    while not (handled() > before and consumer_lag(settings, group, topic) > 0):
        assert time.monotonic() < deadline, "enrich never had a batch in flight"
        time.sleep(0.1)
    return platform.restart("enrich")


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


async def test_enrich_killed_mid_batch_repeats_nothing(start_platform, settings, run_id):
    """Webhooks come faster than enrich runs its models on them, and each kill lands while a batch's outputs are
    going out and its offsets are not committed: its open transaction is aborted, and read_committed consumers see
    each event once."""
    platform = start_platform(SERVICES)
    await run_with_faults(platform, settings, run_id, streams=4, points=SPIKE_AT + 60, rate=400,
                          faults=[partial(kill_enrich_mid_batch, platform, settings)] * 3,
                          fault="kill -9 enrich mid-batch x3")


@pytest.mark.chaos
async def test_the_duplicate_check_fails_on_the_at_least_once_path(start_platform, settings, run_id):
    """The test above against enrich and anomaly on the at-least-once path (outputs outside a transaction, offsets
    committed after them): the outputs of each killed batch come again after the restart, and the check sees them.
    Proves the exactly-once figures come from a check that can fail."""
    platform = start_platform(SERVICES, ENRICH_PROCESSING_GUARANTEE="at_least_once",
                              ANOMALY_PROCESSING_GUARANTEE="at_least_once")
    with pytest.raises(AssertionError, match="repeated records on events.enriched.v1"):
        await run_with_faults(platform, settings, run_id, streams=4, points=SPIKE_AT + 60, rate=400,
                              faults=[partial(kill_enrich_mid_batch, platform, settings)] * 3,
                              fault="kill -9 enrich mid-batch x3, at least once (must repeat)")
