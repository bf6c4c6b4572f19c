"""Drains the stored deliveries: one task per (receiver, group) once its group wait / interval has passed.

A Slack receiver gets one message per group (split at Slack's size limits); PagerDuty gets one event per alert,
in order, so a resolve never overtakes its trigger. What a receiver never takes goes to `<topic>.dlq`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx
from opentelemetry import propagate, trace

from platform_common.kafka import ANOMALIES, Publisher, dead_letter, dlq
from platform_common.tracing import tracer

from .delivery import DeliveryFailed, ReceiverClient, circuit_breakers
from .metrics import CIRCUIT_OPEN, DELIVERIES, LATENCY, QUEUE_DEPTH
from .notifiers import NOTIFIERS
from .outcomes import Outcomes
from .routing import RoutingConfig
from .settings import NotifySettings
from .store import Store

log = logging.getLogger(__name__)


def delivery_span(receiver: str, channel: str, alerts: list[dict]):
    """A CLIENT span per delivery, in the trace of the (first) alert it carries, linked to the others' traces."""
    contexts = [trace.get_current_span(propagate.extract({"traceparent": a["traceparent"]})).get_span_context()
                for a in alerts if a.get("traceparent")]
    return tracer().start_as_current_span(
        f"deliver {receiver}", kind=trace.SpanKind.CLIENT,
        context=trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if contexts else None,
        links=[trace.Link(c) for c in contexts[1:]],
        attributes={"notify.receiver": receiver, "notify.channel": channel, "notify.alerts": len(alerts)})


class Dispatcher:
    def __init__(self, settings: NotifySettings, routes: RoutingConfig, store: Store, publisher: Publisher,
                 outcomes: Outcomes):
        self.settings = settings
        self.routes = routes
        self.store = store
        self.publisher = publisher
        self.outcomes = outcomes
        self.wake = asyncio.Event()
        self.http = httpx.AsyncClient(timeout=settings.notify_http_timeout)
        breakers = circuit_breakers(settings.notify_circuit_threshold, settings.notify_circuit_ttl)
        self.clients = {r.name: ReceiverClient(r, self.http, breakers, settings.notify_max_attempts,
                                               settings.notify_backoff_initial, settings.notify_backoff_max)
                        for r in routes.receivers}
        self.inflight: dict[tuple[str, str], asyncio.Task] = {}
        for name in self.clients:  # every receiver shows in /metrics from the start
            CIRCUIT_OPEN.labels(name).set(0)
            for outcome in ("delivered", "dead_lettered"):
                DELIVERIES.labels(name, outcome)

    async def run(self) -> None:
        await self.store.lead()
        while True:
            try:
                for key in await self.store.due_groups():
                    if key not in self.inflight:
                        task = asyncio.create_task(self.deliver_group(*key))
                        self.inflight[key] = task
                        task.add_done_callback(partial(self._done, key))
                QUEUE_DEPTH.set(await self.store.queue_depth())
            except Exception as e:  # PostgreSQL away: the deliveries wait in it
                log.warning("dispatch failed, retrying: %s", e)
                await asyncio.sleep(1)
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.notify_poll_interval)
            except TimeoutError:
                pass
            self.wake.clear()

    def _done(self, key: tuple[str, str], _task: asyncio.Task) -> None:
        task = self.inflight.pop(key)
        if not task.cancelled() and task.exception():
            log.warning("delivery to %s failed before it finished, will retry: %s", key[0], task.exception())
        self.wake.set()

    async def stop(self) -> None:
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        await self.http.aclose()

    async def deliver_group(self, receiver: str, group_key: str) -> None:
        rows = await self.store.pending(receiver, group_key)
        if not rows:
            return
        size = NOTIFIERS[rows[0]["channel"]].batch_size
        for start in range(0, len(rows), size):
            await self.deliver(receiver, rows[start:start + size], group_key)

    async def deliver(self, name: str, rows: list, group_key: str) -> None:
        async def on_attempt(outcome: str, attempt: int, code: int | None, error: str | None) -> None:
            # a delivered attempt also finishes the rows and starts the group's interval, in one transaction
            finished_group = group_key if outcome == "delivered" else None
            await self.outcomes.publish(
                await self.store.record_attempt(rows, name, outcome, attempt, code, error, finished_group))

        client = self.clients.get(name)
        alerts = [r["alert"] for r in rows]
        try:
            with delivery_span(name, rows[0]["channel"], alerts):
                if client is None:
                    raise DeliveryFailed(f"receiver {name!r} is no longer in the routes file", 0)
                url, body = self.request(client, alerts)
                await client.send(url, body, on_attempt)
        except DeliveryFailed as e:
            await self.dead_letter(name, rows, str(e), e.attempts)
            return
        now = time.time()
        for row in rows:
            DELIVERIES.labels(name, "delivered").inc()
            LATENCY.labels(name).observe(max(0.0, now - row["alert"]["created_at"] / 1000))

    def request(self, client: ReceiverClient, alerts: list[dict]) -> tuple[str, dict]:
        receiver = client.receiver
        secret = receiver.secret()
        if not secret:
            raise DeliveryFailed(f"{receiver.name}: environment variable {receiver.secret_env} is not set", 0)
        return NOTIFIERS[receiver.type].request(secret, alerts, self.links, self.settings)

    def links(self, alert: dict) -> list[dict]:
        links = []
        parts = (alert.get("traceparent") or "").split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            links.append({"href": self.settings.notify_trace_url.format(trace_id=parts[1]), "text": "Trace"})
        portal = f"{self.settings.notify_portal_url.rstrip('/')}/?{urlencode({'stream': alert['stream_id']})}"
        links.append({"href": portal, "text": "Report portal"})
        return links

    async def dead_letter(self, name: str, rows: list, reason: str, attempts: int) -> None:
        """Publishes each alert to its topic's DLQ through the platform's one dead-letter writer (its headers, plus
        the receiver and the attempts), then finishes the deliveries."""
        log.warning("dead-lettering %d alert(s) for %s: %s", len(rows), name, reason)
        for row in rows:
            topic, alert = row["source_topic"], row["alert"]
            # the alert as its topic carries it; the source offset is not kept with a delivery, hence -1
            value = await self.publisher.serde.encode(dlq(topic), alert, schema_of=ANOMALIES)
            record = SimpleNamespace(topic=topic, partition=-1, offset=-1, key=alert["stream_id"], value=value,
                                     headers=[("dlq.receiver", name.encode()),
                                              ("dlq.attempts", str(attempts).encode())])
            await dead_letter(self.publisher, record, DeliveryFailed(reason, attempts), self.settings.notify_group_id)
            DELIVERIES.labels(name, "dead_lettered").inc()
        await self.outcomes.publish(await self.store.record_attempt(rows, name, "dead_lettered", attempts, None,
                                                                    reason))
