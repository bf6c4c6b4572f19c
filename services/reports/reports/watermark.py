"""How far the projections have caught up, read from Kafka: the projector group's committed offsets against the
offsets of the source topics' records at a point in time.

The projections hold every event published before `at` once, on every partition of the source topics, the group has
committed past the first record stamped at or after `at` (or past the partition's end, when no record is that new).
Offsets between the committed one and that target that hold no record (transaction markers, aborted records) do not
count: the group never commits past a trailing marker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from platform_common.settings import CommonSettings

# a topic's partition numbers, from fresh metadata (AIOKafkaProducer.partitions_for)
PartitionsOf = Callable[[str], Awaitable[set[int]]]


def millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Watermark:
    def __init__(self, settings: CommonSettings, topics: list[str], group: str, partitions_of: PartitionsOf):
        self.topics = topics
        self.partitions_of = partitions_of
        options = {"bootstrap_servers": settings.kafka_bootstrap_servers, "enable_auto_commit": False,
                   "isolation_level": "read_committed", "client_id": f"{settings.service_name}-watermark"}
        self.group = AIOKafkaConsumer(group_id=group, **options)  # never subscribes: reads the group's commits only
        self.reader = AIOKafkaConsumer(**options)

    async def start(self) -> None:
        await self.group.start()
        await self.reader.start()

    async def stop(self) -> None:
        await self.group.stop()
        await self.reader.stop()

    async def partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.topics for p in sorted(await self.partitions_of(t))]

    async def offsets(self) -> dict[str, int]:
        """The group's committed offset of each source partition, as "topic/partition": for a report's lineage."""
        return {f"{tp.topic}/{tp.partition}": await self.group.committed(tp) or 0 for tp in await self.partitions()}

    async def reached(self, at: datetime) -> bool:
        partitions = await self.partitions()
        found = await self.reader.offsets_for_times({tp: millis(at) for tp in partitions})
        ends = await self.reader.end_offsets(partitions)
        for tp in partitions:
            committed = await self.group.committed(tp) or 0
            target = found[tp].offset if found.get(tp) is not None else ends[tp]
            if committed < target and await self._records_between(tp, committed, target):
                return False
        return True

    async def _records_between(self, tp: TopicPartition, start: int, end: int) -> bool:
        self.reader.assign([tp])
        self.reader.seek(tp, start)
        for _ in range(5):
            batch = await self.reader.getmany(tp, timeout_ms=500)
            if any(r.offset < end for r in batch.get(tp, ())):
                return True
            if await self.reader.position(tp) >= end:
                return False
        return True  # could not read that far: not caught up, asked again at the next tick
