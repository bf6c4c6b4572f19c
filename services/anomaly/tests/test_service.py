"""The running service against the real stack: alerts read back with confluent-kafka's AvroDeserializer."""


def test_spike_gives_one_trigger_then_a_resolve_and_steady_stream_gives_none(service, harness):
    spiky, steady = harness.series(600, seed=1, spike_at=450), harness.series(600, seed=2)
    last_spiky, last_steady = harness.post("spiky", spiky), harness.post("steady", steady)
    harness.wait_processed("spiky", last_spiky)
    harness.wait_processed("steady", last_steady)

    found = harness.alerts("spiky")
    assert [a["action"] for a in found] == ["trigger", "resolve"], found
    trigger, resolve = found
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["value"] == spiky[450] and trigger["event_id"] == "spiky-450"
    assert trigger["score"] > trigger["threshold"]
    assert trigger["severity"] in {"critical", "error", "warning", "info"}
    assert trigger["window_start"] < trigger["window_end"]
    assert trigger["traceparent"]
    assert harness.alerts("steady") == []


def test_restart_mid_stream_neither_loses_nor_repeats_an_alert(service, harness):
    values = harness.series(900, seed=3, spike_at=500)
    # the first part, up to just past the spike, is processed and its trigger published before the restart
    harness.wait_processed("restarted", harness.post("restarted", values[:510]))
    assert [a["action"] for a in harness.alerts("restarted")] == ["trigger"]
    # the rest arrives, and the service is stopped while it works through it
    last = harness.post("restarted", values[510:], start=510)
    service.stop()
    service.start()
    harness.wait_processed("restarted", last)

    found = harness.alerts("restarted")
    assert [a["action"] for a in found] == ["trigger", "resolve"], found
    assert len({a["alert_id"] for a in found}) == 2
