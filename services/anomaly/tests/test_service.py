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
    # the alert continues the trace of the event that raised it
    assert trigger["traceparent"].split("-")[1] == harness.traceparent("spiky", 450).split("-")[1]
    assert harness.alerts("steady") == []


def test_undecodable_record_goes_to_the_dlq_with_the_reason(service, harness):
    harness.post_raw("broken", b"not avro")
    [dead] = harness.dead_letters(1)
    headers = dict(dead.headers())
    assert dead.value() == b"not avro" and dead.key() == b"broken"
    assert headers["dlq.reason"] and headers["dlq.source.topic"].decode() == harness.settings.anomaly_source_topic
    # the service carries on after it
    harness.wait_processed("after-broken", harness.post("after-broken", harness.series(5, seed=4)))


def test_restart_mid_stream_neither_loses_nor_repeats_an_alert(service, harness):
    values = harness.series(900, seed=3, spike_at=500)
    # the first part, up to just past the spike, is processed and its trigger published before the restart
    harness.wait_processed("restarted", harness.post("restarted", values[:503]))
    assert [a["action"] for a in harness.alerts("restarted")] == ["trigger"]
    # the service stops mid-excursion; the rest arrives while it is down. Only the restored state (history,
    # calibration, the open excursion) can resolve it: a forgetful service would be warming up again
    service.stop()
    last = harness.post("restarted", values[503:], start=503)
    service.start()
    harness.wait_processed("restarted", last)

    found = harness.alerts("restarted")
    assert [a["action"] for a in found] == ["trigger", "resolve"], found
    assert len({a["alert_id"] for a in found}) == 2
    # the stream's model versions are stored with their metadata
    [model, *_] = harness.models("restarted")
    assert model["reason"] == "warmup" and model["validation_error"] >= 0 and model["train_start"] < model["train_end"]
