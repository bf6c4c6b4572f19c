"""PagerDuty events and Slack messages against the documented formats, as the local receivers check them."""

from notify import pagerduty, slack
from notify.dev_receivers import check_pagerduty, check_slack

LINKS = [{"href": "http://localhost:16686/trace/abc", "text": "Trace"}]


def test_trigger_and_resolve_are_valid_events_with_the_same_dedup_key(make_alert, pd_key):
    alert = make_alert("s1")
    trigger = pagerduty.event(alert, pd_key, LINKS)
    resolve = pagerduty.event({**alert, "action": "resolve"}, pd_key, LINKS)
    assert check_pagerduty(trigger) == [] and check_pagerduty(resolve) == []
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == alert["dedup_key"]
    assert trigger["payload"]["severity"] == "critical" and trigger["links"] == LINKS


def test_long_fields_stay_within_pagerduty_limits(make_alert, pd_key):
    alert = make_alert("s" * 2000, dedup_key="k" * 400)
    event = pagerduty.event(alert, pd_key, LINKS)
    assert check_pagerduty(event) == []
    assert len(event["payload"]["summary"]) == 1024 and len(event["dedup_key"]) == 64


def test_checker_rejects_what_breaks_the_format(make_alert, pd_key):
    event = pagerduty.event(make_alert("s1"), pd_key, LINKS)
    assert check_pagerduty({**event, "routing_key": "short"})
    assert check_pagerduty({**event, "payload": {**event["payload"], "summary": "x" * 1025}})
    assert check_pagerduty({**event, "payload": {**event["payload"], "severity": "high"}})
    assert check_pagerduty({"routing_key": pd_key, "event_action": "resolve"})  # no dedup_key


def test_a_full_group_of_long_alerts_stays_within_block_kit_limits(make_alert, pd_key):
    alerts = [make_alert("stream-" + "x" * 3000, n, metric="m" * 3000) for n in range(slack.ALERTS_PER_MESSAGE)]
    message = slack.message(alerts, lambda a: LINKS)
    assert check_slack(message) == []
    assert len(message["blocks"]) <= 50 and message["blocks"][0]["type"] == "header"


def test_slack_checker_rejects_too_many_blocks_and_long_headers(make_alert, pd_key):
    assert check_slack({"blocks": [{"type": "divider"}] * 51})
    assert check_slack({"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]})
    assert check_slack({"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "a"}] * 11}]})
    assert check_slack({}) == ["no_text"]
