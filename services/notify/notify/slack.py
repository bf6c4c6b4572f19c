"""Slack incoming-webhook messages in Block Kit, within Slack's limits (https://api.slack.com/reference/block-kit)."""

from __future__ import annotations

from .pagerduty import iso

MAX_BLOCKS = 50
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_MAX = 2000
MAX_FIELDS = 10
TEXT_MAX = 40000
# header + (section + context) per alert stays well under 50 blocks
ALERTS_PER_MESSAGE = 20
EMOJI = {"critical": ":red_circle:", "error": ":large_orange_circle:", "warning": ":large_yellow_circle:",
         "info": ":large_blue_circle:"}


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def escape(text: str) -> str:
    """mrkdwn control characters (Slack: escape &, < and >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def title(alerts: list[dict]) -> str:
    first = alerts[0]
    if len(alerts) == 1:
        verb = "Resolved" if first["action"] == "resolve" else first["severity"].upper()
        return f"{verb}: {first['metric']} anomaly on {first['stream_id']}"
    resolved = sum(a["action"] == "resolve" for a in alerts)
    tail = f" ({resolved} resolved)" if resolved else ""
    return f"{len(alerts)} anomalies on {first['stream_id']}{tail}"


def alert_blocks(alert: dict, links: list[dict]) -> list[dict]:
    state = ":white_check_mark: resolved" if alert["action"] == "resolve" else \
        f"{EMOJI.get(alert['severity'], '')} {alert['severity']}"
    fields = [
        ("Severity", state),
        ("Stream", alert["stream_id"]),
        ("Metric", alert["metric"]),
        ("Value vs threshold", f"{alert['value']:g} vs {alert['threshold']:g} (score {alert['score']:.3g})"),
        ("Source / tenant", f"{alert['source']} / {alert['tenant']}"),
        ("Window", f"{iso(alert['window_start'])} → {iso(alert['window_end'])}"),
    ]
    link_text = " · ".join(f"<{link['href']}|{escape(link['text'])}>" for link in links)
    return [
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": cut(f"*{name}*\n{escape(str(value))}", FIELD_MAX)}
            for name, value in fields[:MAX_FIELDS]]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(
            f"{link_text} · detector {escape(alert['detector'])} {escape(alert['model_version'])}",
            SECTION_TEXT_MAX)}]},
    ]


def message(alerts: list[dict], links_of) -> dict:
    """One message for up to ALERTS_PER_MESSAGE alerts of one group; `links_of(alert)` gives its links."""
    assert 0 < len(alerts) <= ALERTS_PER_MESSAGE
    head = title(alerts)
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": cut(head, HEADER_MAX), "emoji": True}}]
    for alert in alerts:
        blocks += alert_blocks(alert, links_of(alert))
    return {"text": cut(head, TEXT_MAX), "blocks": blocks[:MAX_BLOCKS]}


class SlackNotifier:
    type = "slack"
    batch_size = ALERTS_PER_MESSAGE
    immediate = False

    def request(self, secret: str, alerts: list[dict], links_of, settings) -> tuple[str, dict]:
        return secret, message(alerts, links_of)  # the secret is the incoming webhook's URL


NOTIFIER = SlackNotifier()
