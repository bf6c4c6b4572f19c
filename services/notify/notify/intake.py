"""From an alert record to stored deliveries: routing, silences and deduplication, before the offset is committed."""

from __future__ import annotations

from datetime import datetime

from aiokafka import ConsumerRecord

from .metrics import DELIVERIES
from .notifiers import NOTIFIERS
from .outcomes import Outcomes
from .routing import RoutingConfig, alert_labels
from .store import Store

ACTIONS = ("trigger", "resolve")


def normalize(value: dict) -> dict:
    """The decoded Avro record as plain JSON (timestamps in epoch milliseconds)."""
    def plain(v):
        return int(v.timestamp() * 1000) if isinstance(v, datetime) else v
    alert = {k: plain(v) for k, v in value.items()}
    if alert.get("action") not in ACTIONS:
        raise ValueError(f"action must be trigger or resolve, not {alert.get('action')!r}")
    return alert


class Intake:
    def __init__(self, routes: RoutingConfig, store: Store, outcomes: Outcomes, wake):
        self.routes = routes
        self.store = store
        self.outcomes = outcomes
        self.wake = wake

    async def handle(self, value: dict, record: ConsumerRecord) -> None:
        alert = normalize(value)
        labels = alert_labels(alert)
        planned = []
        for match in self.routes.match(labels):
            receiver = self.routes.by_name[match.receiver]
            if NOTIFIERS[receiver.type].immediate:
                # one event per alert: PagerDuty groups by dedup_key itself, and a resolve must not wait
                match = match.model_copy(update={"group_by": ("stream_id",), "group_wait": 0.0,
                                                 "group_interval": 0.0})
            group_key = ",".join(f"{name}={labels.get(name, '')}" for name in match.group_by)
            silence = await self.store.silence_for(labels)
            planned.append((match, receiver.type, group_key, silence))
        recorded = await self.store.add_deliveries(alert, record.topic, planned)
        for row in recorded:
            DELIVERIES.labels(row["receiver"], row["outcome"]).inc()
        await self.outcomes.publish(recorded)
        self.wake.set()
