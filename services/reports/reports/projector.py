"""Feeds the store's projections from the event topics; one consumer group over the three topics."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from platform_common.kafka import Publisher
from platform_common.stream import ReliableConsumer

from .settings import ReportsSettings
from .store import Store


def projector(settings: ReportsSettings, store: Store, publisher: Publisher) -> ReliableConsumer:
    upserts = {settings.reports_raw_topic: store.upsert_event,
               settings.reports_enriched_topic: store.upsert_enriched,
               settings.reports_anomalies_topic: store.upsert_anomaly}

    async def handle(value: dict, record: ConsumerRecord) -> None:
        await upserts[record.topic](value)

    return ReliableConsumer(settings, list(upserts), settings.reports_group, handle, publisher)
