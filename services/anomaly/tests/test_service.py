"""The running service against the real stack: alerts read back with confluent-kafka's AvroDeserializer."""

import httpx
import numpy as np

from anomaly.backtest import run_series, service_config
from anomaly.detector import FALLBACK, LSTM
from anomaly.model import train
from anomaly.testing import enriched_event, event_time
from platform_common.testing import metric_sum


def points(values: list[float]) -> list[tuple[int, float]]:
    """The series as the service sees it: each value at its event's time."""
    return [(int(event_time(i).timestamp() * 1000), v) for i, v in enumerate(values)]


def test_spike_gives_one_trigger_then_a_resolve_and_steady_stream_gives_none(service, harness):
    spiky, steady = harness.series(600, seed=1, spike_at=450), harness.series(600, seed=2)
    last_spiky, last_steady = harness.post("spiky", spiky), harness.post("steady", steady)
    harness.wait_processed("spiky", last_spiky)
    harness.wait_processed("steady", last_steady)

    found = harness.alerts("spiky")
    assert [a["action"] for a in found] == ["trigger", "resolve"], found
    trigger, resolve = found
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["value"] == spiky[450] and trigger["event_id"] == "default-spiky-450"
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
    # the spike lands after the second model's settling (installs at 214 and 492, each settling 100 points)
    values = harness.series(900, seed=3, spike_at=650)
    # the first part, up to just past the spike, is processed and its trigger published before the restart
    harness.wait_processed("restarted", harness.post("restarted", values[:653]))
    assert [a["action"] for a in harness.alerts("restarted")] == ["trigger"]
    # the service stops mid-excursion; the rest arrives while it is down. Only the restored state (history,
    # calibration, the open excursion) can resolve it: a forgetful service would be warming up again
    service.stop()
    last = harness.post("restarted", values[653:], start=653)
    service.start()
    harness.wait_processed("restarted", last)

    found = harness.alerts("restarted")
    assert [a["action"] for a in found] == ["trigger", "resolve"], found
    assert len({a["alert_id"] for a in found}) == 2
    # the stream's model versions are stored with their metadata
    [model, *_] = harness.models("restarted")
    assert model["reason"] == "warmup" and model["validation_error"] >= 0 and model["train_start"] < model["train_end"]


def test_points_held_for_a_model_at_a_kill_are_scored_after_the_restart_without_a_new_record(service, harness):
    # a backlog: the stream reaches its model's install point before the model is trained, and holds its points
    values = harness.series(600, seed=5, spike_at=450)
    last = harness.post("held", values)
    harness.wait_held("held", last)
    service.kill()
    service.start()
    # nothing more arrives for the stream: the restarted service trains its model again on its own
    harness.wait_processed("held", last)
    found = harness.alerts("held")
    assert [a["action"] for a in found] == ["trigger", "resolve"], found


def test_backtest_raises_exactly_the_alerts_of_the_service(service, harness):
    # a backlog: the service takes it in large batches and trains in its worker process meanwhile, so the stream
    # reaches its models' install points before they are trained and holds its points for them
    values = harness.burst(1100, seed=11, at=820)
    values[480:484] = [v + 40 for v in values[480:484]]
    harness.wait_processed("replayed", harness.post("replayed", values))
    served = [(a["action"], int(a["window_end"].timestamp() * 1000), a["detector"], a["model_version"],
               a["event_id"], a["score"], a["threshold"]) for a in harness.alerts("replayed")]

    scored, _, trainings = run_series(points(values), service_config(), train, "default/replayed", "latency_ms")
    backtested = [(s.decision.action, s.decision.timestamp, s.decision.detector, s.decision.model_version,
                   f"default-replayed-{s.context}", s.decision.score, s.decision.threshold)
                  for s in scored if s.decision is not None]
    assert trainings >= 2 and any(a[2] == LSTM for a in backtested), backtested
    # the service did train asynchronously: the stream reached an install point before its model and waited
    exposition = httpx.get(f"http://127.0.0.1:{harness.settings.anomaly_port}/metrics").text
    assert metric_sum(exposition, "anomaly_late_models_total") >= 1
    assert [a[:5] for a in served] == [a[:5] for a in backtested]
    for got, want in zip(served, backtested, strict=True):
        assert np.allclose(got[5:], want[5:], rtol=1e-4), (got, want)
    # the same versions are stored
    stored = {m["version"] for m in harness.models("replayed")}
    assert {a[3] for a in served if a[2] == LSTM} <= stored


def test_the_lstm_raises_what_the_fallback_misses(service, harness):
    # before two days of history, where the daily baseline could see it too
    values = harness.burst(700, seed=13, at=450)
    harness.wait_processed("shape", harness.post("shape", values))

    fallback, _, _ = run_series(points(values), service_config(), None, "default/shape", "latency_ms")
    assert [s.decision for s in fallback if s.decision is not None] == []  # the statistics see nothing

    triggers = [a for a in harness.alerts("shape") if a["action"] == "trigger"]
    assert len(triggers) == 1, triggers
    [trigger] = triggers
    assert 450 <= int(trigger["event_id"].rsplit("-", 1)[1]) < 490
    assert trigger["detector"] == LSTM != FALLBACK
    assert trigger["model_version"] in {m["version"] for m in harness.models("shape")}
    assert trigger["model_version"].startswith("lstm:default/shape:latency_ms:")


def test_a_record_that_keeps_failing_is_retried_then_dead_lettered(service, harness):
    # decodes fine, but no PostgreSQL text can hold its stream id: every attempt fails
    poison = enriched_event("poison\x00id", 0, 1.0)
    offset = harness.post_event(poison)
    # (the undecodable record of the test before is there too, when the module runs whole)
    [dead] = [m for m in harness.dead_letters(2) if m.key() == b"poison\x00id"]
    headers = dict(dead.headers())
    assert headers["dlq.exception.type"] == b"builtins.ValueError"
    assert b"NUL character" in headers["dlq.reason"] and b"Traceback" in headers["dlq.stack"]
    assert headers["dlq.source.topic"].decode() == harness.settings.anomaly_source_topic
    assert int(headers["dlq.source.offset"]) == offset
    assert headers["dlq.consumer.group"].decode() == harness.settings.anomaly_app_id
    assert harness.post_event(poison) > offset  # the same record once more, to count one record's attempts
    harness.wait_processed("after-poison", harness.post("after-poison", harness.series(5, seed=4)))
    exposition = httpx.get(f"http://127.0.0.1:{harness.settings.anomaly_port}/metrics").text
    retries = metric_sum(exposition, "anomaly_processing_retries_total", step="load")
    assert retries == 2 * (harness.settings.consumer_max_attempts - 1)


def test_two_tenants_with_the_same_stream_id_keep_separate_models_and_state(service, harness):
    spiky, steady = harness.series(600, seed=21, spike_at=450), harness.series(600, seed=22)
    last_acme = harness.post("shared-id", spiky, tenant="acme")
    last_globex = harness.post("shared-id", steady, tenant="globex")
    harness.wait_processed("shared-id", last_acme, tenant="acme")
    harness.wait_processed("shared-id", last_globex, tenant="globex")

    acme, globex = harness.models("shared-id", tenant="acme"), harness.models("shared-id", tenant="globex")
    assert acme and globex and not {m["version"] for m in acme} & {m["version"] for m in globex}
    assert all(m["version"].startswith("lstm:acme/shared-id:") for m in acme)
    found = harness.alerts("shared-id", tenant="acme")
    assert [a["action"] for a in found] == ["trigger", "resolve"] and found[0]["event_id"] == "acme-shared-id-450"
    assert found[0]["dedup_key"].startswith("acme:shared-id:")
    assert harness.alerts("shared-id", tenant="globex") == []
