"""PagerDuty Events API v2 events (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255


def dedup_key(alert: dict) -> str:
    """The alert's key, or its digest when longer than PagerDuty's 255 characters (same for trigger and resolve).
    anomaly's keys begin with the tenant, so two tenants' incidents never merge."""
    key = alert["dedup_key"]
    return key if len(key) <= DEDUP_KEY_MAX else hashlib.sha256(key.encode()).hexdigest()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def summary(alert: dict) -> str:
    text = (f"[{alert['severity'].upper()}] {alert['metric']} anomaly on {alert['stream_id']}: "
            f"value {alert['value']:g} vs threshold {alert['threshold']:g} (score {alert['score']:.3g})")
    return text if len(text) <= SUMMARY_MAX else text[:SUMMARY_MAX - 1] + "…"


def event(alert: dict, routing_key: str, links: list[dict]) -> dict:
    """A `trigger` for a trigger alert, a `resolve` with the same dedup_key for a resolve alert."""
    if alert["action"] == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(alert)}
    severity = alert["severity"] if alert["severity"] in SEVERITIES else "error"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(alert),
        "payload": {
            "summary": summary(alert),
            "source": f"{alert['source']}/{alert['stream_id']}",
            "severity": severity,
            "timestamp": iso(alert["window_end"]),
            "component": alert["metric"],
            "group": alert["tenant"],
            "class": alert["detector"],
            "custom_details": {
                "stream_id": alert["stream_id"], "metric": alert["metric"], "value": alert["value"],
                "threshold": alert["threshold"], "score": alert["score"],
                "window_start": iso(alert["window_start"]), "window_end": iso(alert["window_end"]),
                "model_version": alert["model_version"], "alert_id": alert["alert_id"],
                "event_id": alert["event_id"], "attributes": alert.get("attributes") or {},
            },
        },
        "links": links,
        "client": "platform notify",
    }


class PagerDutyNotifier:
    type = "pagerduty"
    batch_size = 1
    immediate = True

    def request(self, secret: str, alerts: list[dict], links_of, settings) -> tuple[str, dict]:
        [alert] = alerts
        return settings.notify_pagerduty_url, event(alert, secret, links_of(alert))


NOTIFIER = PagerDutyNotifier()
