"""Soak (`make chaos`): a steady 500 events/s for 10 minutes through ingest, enrich, anomaly and notify; the memory
of every service stays flat within 10%, the consumer lag of enrich, anomaly and notify stays under a minute of
traffic at every sample, and the backlog drains within two minutes of the flow's end."""

import asyncio
import json
import os
import time

import httpx
import pytest
from support.chaos import record
from support.platform import metric_payloads, sign

from platform_common.testing import consumer_lag

SERVICES = ("ingest-webhook", "enrich", "anomaly", "notify")
RATE = int(os.environ.get("SOAK_RATE", 500))
SECONDS = int(os.environ.get("SOAK_SECONDS", 600))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def tree_rss_kib(pid: int) -> int:
    """RSS of a service and its worker processes (uvicorn workers, Faust, training pools)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return rss_kib(pid) + sum(tree_rss_kib(c) for c in children)


LAGGING = ("enrich", "anomaly", "notify")
LAG_BOUND_SECONDS = 60  # the most traffic (in seconds of the rate) a consumer may have behind it at any sample


def lags(platform, settings) -> dict[str, int]:
    return {name: consumer_lag(settings, *platform.groups[name]) for name in LAGGING}


@pytest.mark.chaos
async def test_soak_memory_flat_and_lag_bounded(start_platform, settings, run_id):
    platform = start_platform(SERVICES)
    port = platform.ports["ingest-webhook"]
    payloads = metric_payloads(run_id, streams=50, points=RATE * SECONDS // 50)
    samples: dict[str, list[int]] = {name: [] for name in SERVICES}
    lag_samples: list[dict[str, int]] = []
    accepted = 0
    gate = asyncio.Semaphore(64)

    def sample() -> None:
        for name, proc in platform.services.items():
            samples[name].append(tree_rss_kib(proc.proc.pid))

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as client:
        async def send(payload: dict) -> None:
            """As a well-behaved publisher: a delivery without an answer (a keep-alive connection the server closed
            as it was reused) is retried with the same id; a replay of a stored one answers 200."""
            nonlocal accepted
            body = json.dumps(payload)
            async with gate:
                for _ in range(3):
                    try:
                        answer = await client.post(f"http://127.0.0.1:{port}/webhooks/demo", content=body,
                                                   headers=sign(payload["id"], body))
                    except httpx.TransportError:
                        continue
                    accepted += answer.status_code in (200, 202)
                    return

        started = time.monotonic()
        tasks = []
        for i, payload in enumerate(payloads):
            delay = started + i / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(payload)))
            if i % (RATE * 30) == 0:
                sample()
                if i:
                    lag_samples.append(await asyncio.to_thread(lags, platform, settings))
        await asyncio.gather(*tasks)
    achieved = len(payloads) / (time.monotonic() - started)
    sample()

    # the backlog drains: every consumer group of the pipeline catches up with its input
    drain_started = time.monotonic()
    while time.monotonic() - drain_started < 120:
        behind = await asyncio.to_thread(lags, platform, settings)
        if not any(behind.values()):
            break
        await asyncio.sleep(2)
    drain = time.monotonic() - drain_started
    worst = {name: max(s[name] for s in lag_samples) for name in LAGGING}
    record(fault=f"soak {RATE}/s for {SECONDS}s (achieved {achieved:.0f}/s, max lag {max(worst.values())})",
           sent=len(payloads), accepted=accepted, stored="-", lost=len(payloads) - accepted, duplicated="-",
           recovery_s=drain)

    assert accepted == len(payloads), f"{len(payloads) - accepted} webhooks not accepted"
    assert achieved >= 0.95 * RATE, f"the load generator reached only {achieved:.0f}/s"
    # memory after warm-up (second sample) against the end: flat within 10%
    for name, values in samples.items():
        assert values[-1] <= values[1] * 1.10, f"{name} RSS grew from {values[1]} to {values[-1]} KiB: {values}"
    for name, most in worst.items():
        assert most <= RATE * LAG_BOUND_SECONDS, f"{name} fell {most} records behind: {lag_samples}"
    assert not any(behind.values()), f"consumers still behind {drain:.0f} s after the flow: {behind}"
