"""notify end to end: real Kafka, registry and PostgreSQL, local PagerDuty/Slack receivers checking every request."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from platform_common.kafka import dlq
from platform_common.testing import decode_avro, read_messages


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def pd_events(receivers, action="trigger"):
    return [e for e in receivers.accepted("pagerduty") if e["event_action"] == action]


async def test_alert_gives_one_page_and_one_message_and_resolve_resolves_it(
        notify, receivers, produce, make_alert, wait_for, db, notify_settings, api):
    trigger = make_alert("s-main")
    await produce(trigger)
    await wait_for(lambda: pd_events(receivers) and receivers.accepted("slack/ok"))
    await produce({**make_alert("s-main"), "action": "resolve", "dedup_key": trigger["dedup_key"]})
    await wait_for(lambda: pd_events(receivers, "resolve") and len(receivers.accepted("slack/ok")) == 2)

    [page] = pd_events(receivers)
    [resolve] = pd_events(receivers, "resolve")
    assert page["dedup_key"] == resolve["dedup_key"] == trigger["dedup_key"]
    assert page["payload"]["custom_details"]["alert_id"] == trigger["alert_id"]
    message = receivers.accepted("slack/ok")[0]
    assert message["blocks"][0]["text"]["text"] == "CRITICAL: latency_ms anomaly on s-main"
    assert "0af7651916cd43dd8448eb211c80319c" in str(message["blocks"])  # the trace link
    assert receivers.accepted("slack/ok")[1]["text"].startswith("Resolved")
    assert [c.status for c in receivers.calls["pagerduty"]] == [202, 202]  # nothing rejected, nothing repeated

    # who was told what, when: in PostgreSQL (just after the receiver's answer) and on notifications.v1
    await wait_for(lambda: db.fetchval(f"select count(*) = 4 from {notify_settings.notify_db_schema}.attempts"))
    rows = await db.fetch(f"select receiver, action, outcome from {notify_settings.notify_db_schema}.attempts")
    assert sorted(map(tuple, rows)) == [("pd", "resolve", "delivered"), ("pd", "trigger", "delivered"),
                                        ("slack-ok", "resolve", "delivered"), ("slack-ok", "trigger", "delivered")]
    outcomes = [decode_avro(notify_settings, m) for m in
                await asyncio.to_thread(
                read_messages, notify_settings, notify_settings.notify_notifications_topic, 4)]
    assert sorted((o["receiver"], o["action"], o["outcome"]) for o in outcomes) == sorted(map(tuple, rows))

    metrics = (await api.get("/metrics")).text
    assert 'notify_deliveries_total{outcome="delivered",receiver="pd"} 2.0' in metrics
    assert "notify_delivery_latency_seconds_bucket" in metrics and "notify_queue_depth" in metrics


async def test_same_alert_key_is_delivered_once(notify, receivers, produce, make_alert, wait_for, db,
                                                notify_settings):
    first = make_alert("s-dup", severity="warning")
    await produce(first, {**make_alert("s-dup", severity="warning"), "dedup_key": first["dedup_key"]})
    await wait_for(lambda: receivers.accepted("slack/ok"))
    outcomes = await wait_for(lambda: db.fetch(
        f"select outcome from {notify_settings.notify_db_schema}.attempts order by at"))
    await wait_for(lambda: db.fetchval(
        f"select count(*) = 2 from {notify_settings.notify_db_schema}.attempts"))
    assert sorted(r["outcome"] for r in await db.fetch(
        f"select outcome from {notify_settings.notify_db_schema}.attempts")) == ["deduplicated", "delivered"]
    assert len(receivers.accepted("slack/ok")) == 1 and outcomes


async def test_500_three_times_then_accepted_is_delivered_once_after_backoff(
        notify, receivers, produce, make_alert, wait_for):
    receivers.fail("pagerduty", 500, times=3)
    await produce(make_alert("s-flaky"))
    await wait_for(lambda: pd_events(receivers))
    calls = receivers.calls["pagerduty"]
    assert [c.status for c in calls] == [500, 500, 500, 202]
    gaps = [b.at - a.at for a, b in pairwise(calls)]
    # exponential backoff (0.3 s initial, doubling, plus up to 0.3 s jitter)
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[2] >= 1.2
    assert len(pd_events(receivers)) == 1


async def test_429_retry_after_is_honoured(notify, receivers, produce, make_alert, wait_for, db, notify_settings):
    receivers.fail("pagerduty", 429, times=1, retry_after=2)
    await produce(make_alert("s-limited"))
    await wait_for(lambda: db.fetchval(
        f"select count(*) > 0 from {notify_settings.notify_db_schema}.attempts where outcome = 'retrying'"))
    # a second alert once notify has read the 429: a request already in flight then could not have known of it
    await produce(make_alert("s-limited-2"))
    await wait_for(lambda: len(pd_events(receivers)) == 2)
    calls = receivers.calls["pagerduty"]
    assert calls[0].status == 429 and all(c.status == 202 for c in calls[1:])
    # no call at all to that receiver before Retry-After, neither the retry nor the other alert's first try
    assert all(c.at - calls[0].at >= 2.0 for c in calls[1:])


async def test_receiver_that_never_recovers_ends_in_dlq_and_others_keep_receiving(
        notify, receivers, produce, make_alert, wait_for, notify_settings, db):
    receivers.fail("slack/broken")  # 500 forever
    broken = make_alert("broken-1", severity="warning")
    await produce(broken)
    await wait_for(lambda: len(receivers.calls.get("slack/broken", [])) >= 2)
    await produce(make_alert("s-healthy"))  # delivered while the broken receiver is still retrying
    await wait_for(lambda: pd_events(receivers) and receivers.accepted("slack/ok"))
    assert len(receivers.calls["slack/broken"]) < notify_settings.notify_max_attempts

    # read in a thread: confluent-kafka blocks, and notify runs on this event loop
    [dead] = await asyncio.to_thread(read_messages, notify_settings, dlq(notify_settings.notify_topics[0]), 1,
                                     timeout=30)
    headers = dict(dead.headers())
    assert b"slack-broken" in headers["dlq.reason"] and b"HTTP 500" in headers["dlq.reason"]
    assert decode_avro(notify_settings, dead)["alert_id"] == broken["alert_id"]
    assert len(receivers.calls["slack/broken"]) == notify_settings.notify_max_attempts
    assert receivers.accepted("slack/broken") == []
    # the DLQ first, then the delivery is finished in PostgreSQL
    await wait_for(lambda: db.fetchval(f"select status = 'dead_lettered' from {notify_settings.notify_db_schema}"
                                       f".deliveries where alert_id = $1", broken["alert_id"]))


async def test_ten_alerts_of_one_stream_within_group_wait_give_one_message(
        notify, receivers, produce, make_alert, wait_for):
    started = time.monotonic()
    await produce(*(make_alert("s-burst", n, severity="warning") for n in range(10)))
    await wait_for(lambda: receivers.accepted("slack/ok"))
    assert time.monotonic() - started >= 1.5  # the group wait
    await asyncio.sleep(max(0.0, started + 4 - time.monotonic()))  # nothing more arrives
    [message] = receivers.accepted("slack/ok")
    assert message["text"] == "10 anomalies on s-burst"
    assert sum(b["type"] == "section" for b in message["blocks"]) == 10


async def test_a_group_too_big_for_one_slack_message_is_split_within_block_kit_limits(
        notify, receivers, produce, make_alert, wait_for):
    await produce(*(make_alert("s-big", n, severity="warning") for n in range(25)))
    await wait_for(lambda: len(receivers.accepted("slack/ok")) == 2)
    assert [m["text"] for m in receivers.accepted("slack/ok")] == ["20 anomalies on s-big", "5 anomalies on s-big"]
    assert all(c.status == 200 for c in receivers.calls["slack/ok"])  # the receiver's Block Kit checks passed


async def test_silenced_alert_is_not_delivered_but_recorded(
        notify, receivers, produce, make_alert, wait_for, api, db, notify_settings):
    answer = await api.post("/api/v2/silences", json={
        "matchers": [{"name": "stream", "value": "s-quiet.*", "isRegex": True}],
        "endsAt": in_hours(1), "createdBy": "tests", "comment": "maintenance"})
    assert answer.status_code == 200, answer.text
    silence_id = answer.json()["silenceID"]
    [listed] = (await api.get("/api/v2/silences")).json()
    assert listed["id"] == silence_id and listed["status"]["state"] == "active"

    quiet = make_alert("s-quiet-1")
    await produce(quiet, make_alert("s-loud"))
    await wait_for(lambda: receivers.accepted("slack/ok"))
    silenced = await wait_for(lambda: db.fetch(
        f"select receiver, silence_id::text from {notify_settings.notify_db_schema}.attempts "
        f"where alert_id = $1 and outcome = 'silenced'", quiet["alert_id"]))
    assert sorted(map(tuple, silenced)) == [("pd", silence_id), ("slack-ok", silence_id)]
    assert [e["dedup_key"] for e in pd_events(receivers)] == [make_alert("s-loud")["dedup_key"]]

    # expired, it silences nothing any more
    assert (await api.delete(f"/api/v2/silence/{silence_id}")).status_code == 200
    assert (await api.get(f"/api/v2/silence/{silence_id}")).json()["status"]["state"] == "expired"
    await produce(make_alert("s-quiet-2"))
    await wait_for(lambda: len(pd_events(receivers)) == 2)


async def test_silence_api_answers_bad_requests_with_json(notify, api):
    bad = await api.post("/api/v2/silences", json={"matchers": [], "endsAt": in_hours(1),
                                                   "createdBy": "t", "comment": "c"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    past = await api.post("/api/v2/silences", json={"matchers": [{"name": "a", "value": "b"}],
                                                    "endsAt": "2001-01-01T00:00:00Z", "createdBy": "t",
                                                    "comment": "c"})
    assert past.status_code == 400 and "endsAt" in past.json()["detail"]
    regex = await api.post("/api/v2/silences", json={"matchers": [{"name": "a", "value": "(", "isRegex": True}],
                                                     "endsAt": in_hours(1), "createdBy": "t",
                                                     "comment": "c"})
    assert regex.status_code == 400
    missing = await api.delete("/api/v2/silence/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_two_processes_on_one_schema_send_each_alert_once(
        notify, notify_settings, receivers, produce, make_alert, wait_for):
    """As in a rolling restart: both consume (Kafka splits the partitions), only the lock holder sends."""
    from collections import Counter

    from notify.app import Notify
    from notify.routing import RoutingConfig

    second = Notify(notify_settings, RoutingConfig.load(notify_settings.notify_routes_file))
    await second.start()
    try:
        alerts = [make_alert(f"s-pair-{n}", n) for n in range(12)]
        await produce(*alerts)
        await wait_for(lambda: len(receivers.accepted("pagerduty")) >= 12, timeout=30)
        await asyncio.sleep(1)
    finally:
        await second.stop()
    assert Counter(e["dedup_key"] for e in receivers.accepted("pagerduty")) == {a["dedup_key"]: 1 for a in alerts}
