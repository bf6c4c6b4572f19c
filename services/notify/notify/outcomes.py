"""Each attempt's outcome, already stored in PostgreSQL, published to notifications.v1.

PostgreSQL is the record; the topic is fed from it, and a sweep republishes what a crash or a Kafka outage left
unpublished (so the topic may hold an outcome twice, never miss one).
"""

from __future__ import annotations

import asyncio
import logging

from platform_common.kafka import NOTIFICATIONS, Publisher

from .store import Store

log = logging.getLogger(__name__)


class Outcomes:
    def __init__(self, publisher: Publisher, store: Store, topic: str):
        self.publisher = publisher
        self.store = store
        self.topic = topic

    async def publish(self, recorded: list[dict]) -> None:
        done = []
        try:
            for row in recorded:
                value = {**row, "notification_id": str(row["notification_id"]),
                         "silence_id": str(row["silence_id"]) if row["silence_id"] else None}
                await self.publisher.publish(self.topic, row["stream_id"], value, schema_of=NOTIFICATIONS)
                done.append(row["notification_id"])
        except Exception as e:  # the sweep publishes the rest
            log.warning("publishing outcomes failed, will retry: %s", e)
        if done:
            await self.store.mark_published(done)

    async def sweep(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.publish(await self.store.unpublished(older_than=interval))
            except Exception as e:
                log.warning("outcome sweep failed: %s", e)
