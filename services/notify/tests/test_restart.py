"""Killing notify (SIGKILL) mid-delivery and restarting it: every alert delivered, none twice to a receiver."""

import asyncio
import json
import os
import signal
import sys
from collections import Counter

from platform_common.testing import free_port

# slow receivers (5 a second), so that the kill lands while deliveries are still going on
ROUTES = """
receivers:
  - {name: pd, type: pagerduty, routing_key_env: NOTIFY_TEST_PD_KEY, rate_limit: {max_rate: 5, period_seconds: 1}}
  - {name: slack-ok, type: slack, webhook_url_env: NOTIFY_TEST_SLACK_OK, rate_limit: {max_rate: 5, period_seconds: 1}}
route:
  receiver: slack-ok
  group_wait: 200ms
  routes:
    - {matchers: ['severity="critical"'], receiver: pd, continue: true}
    - receiver: slack-ok
"""


async def start_notify(settings, routes, log) -> asyncio.subprocess.Process:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "SCHEMA_REGISTRY_URL": settings.schema_registry_url, "DATABASE_URL": settings.database_url,
           "NOTIFY_TOPICS": json.dumps(settings.notify_topics),
           "NOTIFY_NOTIFICATIONS_TOPIC": settings.notify_notifications_topic,
           "NOTIFY_GROUP_ID": settings.notify_group_id, "NOTIFY_DB_SCHEMA": settings.notify_db_schema,
           "NOTIFY_ROUTES_FILE": str(routes), "NOTIFY_PAGERDUTY_URL": settings.notify_pagerduty_url,
           "NOTIFY_PORT": str(free_port()), "NOTIFY_POLL_INTERVAL": "0.05", "SERVICE_NAME": "notify-tests"}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "notify", env=env, stdout=log, stderr=log)


async def test_sigkill_mid_delivery_then_restart_delivers_all_once(
        notify_settings, receivers, produce, make_alert, wait_for, db, tmp_path):
    routes = tmp_path / "slow-routes.yaml"
    routes.write_text(ROUTES)
    alerts = [make_alert(f"s-restart-{n}", n) for n in range(20)]
    with open(tmp_path / "notify.log", "ab") as log:
        first = await start_notify(notify_settings, routes, log)
        try:
            await produce(*alerts)
            await wait_for(lambda: len(receivers.accepted("slack/ok")) >= 5, timeout=60)
            # receivers start failing, so notify is retrying when it dies; the pause lets it store the outcome
            # of a request already accepted (killed in that millisecond, it would send it again: see README)
            receivers.fail("pagerduty")
            receivers.fail("slack/ok")
            await asyncio.sleep(0.5)
            first.send_signal(signal.SIGKILL)
            await first.wait()
        finally:
            if first.returncode is None:
                first.kill()
        delivered_before = len(receivers.accepted("slack/ok")) + len(receivers.accepted("pagerduty"))
        assert delivered_before < 2 * len(alerts), "the kill came after every delivery: nothing was tested"

        # more alerts while notify is down: they wait in Kafka
        late = [make_alert(f"s-late-{n}", n) for n in range(5)]
        await produce(*late)
        receivers.heal("pagerduty")
        receivers.heal("slack/ok")
        second = await start_notify(notify_settings, routes, log)
        try:
            everything = alerts + late
            await wait_for(lambda: len(receivers.accepted("pagerduty")) >= len(everything)
                           and len(receivers.accepted("slack/ok")) >= len(everything), timeout=60)
            await asyncio.sleep(1.5)  # anything sent twice would arrive now
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 20)
    assert second.returncode == 0, (tmp_path / "notify.log").read_text()[-3000:]

    pages = Counter(e["dedup_key"] for e in receivers.accepted("pagerduty"))
    messages = Counter(m["text"] for m in receivers.accepted("slack/ok"))
    assert pages == {a["dedup_key"]: 1 for a in everything}
    assert messages == {f"CRITICAL: latency_ms anomaly on {a['stream_id']}": 1 for a in everything}
    status = await db.fetch(f"select status, count(*) from {notify_settings.notify_db_schema}.deliveries "
                            f"group by status")
    assert dict(map(tuple, status)) == {"delivered": 2 * len(everything)}
