"""Metric streams posted at the front door, through enrich, to anomaly (issue: anomaly): a stream with an injected
spike gives one alert in anomalies.v1 and a resolve after it; a steady stream gives none."""

import time

import httpx
import pytest
from support.platform import SPIKE_AT, Sender, metric_payloads

from platform_common.testing import decode_avro, read_messages


@pytest.mark.slow
def test_a_spike_gives_one_alert_and_its_resolve_and_a_steady_stream_none(start_platform, settings, run_id):
    platform = start_platform(("ingest-webhook", "enrich", "anomaly"))
    sender = Sender(platform.ports["ingest-webhook"])
    # past the detector's warm-up and model install; the spike lasts three points, then the stream is normal again
    spiky = metric_payloads(f"{run_id}-spiky", streams=1, points=SPIKE_AT + 60, spike_at=SPIKE_AT)
    steady = metric_payloads(f"{run_id}-steady", streams=1, points=SPIKE_AT + 60)
    with httpx.Client(timeout=10) as client:
        for a, b in zip(spiky, steady):
            assert sender.post(client, a) == 202 and sender.post(client, b) == 202, sender.refused

    spiky_stream, steady_stream = spiky[0]["stream"], steady[0]["stream"]
    deadline = time.monotonic() + 90
    alerts = []
    while time.monotonic() < deadline:
        alerts = [decode_avro(settings, m) for m in read_messages(settings, platform.topics["anomalies.v1"], 10,
                                                                  timeout=5)]
        if [a["action"] for a in alerts if a["stream_id"] == spiky_stream] == ["trigger", "resolve"]:
            break
    time.sleep(5)  # a second alert, or one on the steady stream, would show up here
    alerts = [decode_avro(settings, m) for m in read_messages(settings, platform.topics["anomalies.v1"], 10,
                                                              timeout=5)]

    assert not [a for a in alerts if a["stream_id"] == steady_stream], alerts
    trigger, resolve = [a for a in alerts if a["stream_id"] == spiky_stream]
    assert (trigger["action"], resolve["action"]) == ("trigger", "resolve"), alerts
    assert trigger["dedup_key"] == resolve["dedup_key"] and trigger["metric"] == "load"
    assert trigger["value"] == 500.0 and trigger["score"] > trigger["threshold"]
    assert trigger["event_id"] in {f"{run_id}-spiky-s0-{i}" for i in range(SPIKE_AT, SPIKE_AT + 3)} and trigger["traceparent"]
    assert trigger["window_start"] <= trigger["window_end"] and trigger["severity"]
