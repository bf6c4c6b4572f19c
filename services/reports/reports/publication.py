"""A report's record on reports.v1, and finding one that was published before a crash: the step between the send and
the run's update is the only place a report could be published twice, so a resumed run looks first."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition

from platform_common.avro import AvroSerde
from platform_common.settings import CommonSettings

from .watermark import PartitionsOf, millis


def millis_of(iso: str) -> int:
    return millis(datetime.fromisoformat(iso))


def published_record(report: dict, pdf_sha256: str) -> dict:
    lineage = report["lineage"]
    return {"report_id": report["report_id"], "definition": report["definition"], "tenant": report["tenant"],
            "period_start": millis_of(report["period_start"]), "period_end": millis_of(report["period_end"]),
            "title": report["title"], "portal_url": report["portal_url"], "pdf_sha256": pdf_sha256,
            "model": lineage["model"], "prompt_version": ",".join(lineage["prompt_versions"]),
            "cited_chunks": lineage["cited_chunks"], "removed_sentences": len(report["removed"]),
            "query_versions": lineage["query_versions"], "anomalies": len(report["anomalies"]),
            "generated_at": millis_of(report["generated_at"])}


async def find_published(settings: CommonSettings, serde: AvroSerde, partitions_of: PartitionsOf, topic: str,
                         report_id: str, since: datetime, timeout: float = 30.0) -> tuple[int, int] | None:
    """(partition, offset) of `report_id`'s record among those of `topic` stamped since `since`, or None."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                              isolation_level="read_committed", client_id=f"{settings.service_name}-publication")
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await partitions_of(topic))]
        # a minute of margin: the record's timestamp is the producer's clock, the run's is the database's
        starts = await reader.offsets_for_times({tp: millis(since - timedelta(minutes=1)) for tp in partitions})
        ends = await reader.end_offsets(partitions)
        todo = [tp for tp in partitions if starts.get(tp) is not None]
        reader.assign(todo)
        for tp in todo:
            reader.seek(tp, starts[tp].offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while todo:
            if loop.time() > deadline:
                raise TimeoutError(f"{topic} could not be read to its end in {timeout:.0f}s")
            for tp, records in (await reader.getmany(*todo, timeout_ms=500)).items():
                for record in records:
                    if record.offset < ends[tp] and (await serde.decode(record.value))["report_id"] == report_id:
                        return tp.partition, record.offset
            todo = [tp for tp in todo if await reader.position(tp) < ends[tp]]
        return None
    finally:
        await reader.stop()
