"""rag's contextualizer working off a backlog on the running stack (Kafka, registry, PostgreSQL, Redis): N enriched
events, one in `--text-every` with a text, published at once to a topic of their own, then timed from the first
publication until the contextualize group has committed them all (its lag is 0). The service runs in this process
as `python -m rag` runs it (exactly once, one transaction per batch), with the reference documents indexed; the text
events are routine (retrieval only, no generation), so the figure is the stream path's ceiling, not the LLM's.

Modes, each on fresh topics and group, one after another in the same run:
- `per-record ack`: each contextualized record waits for its own broker acknowledgement before the next record is
  handled (what `Publisher.publish` does, and what rag did before the acks were awaited per batch);
- `batch acks`: records are handed to the producer and the batch's acks awaited together before the commit.

Run: .venv/bin/python services/rag/bench_backlog.py [--events 3000] [--text-every 10] [--batches 64 256]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import KafkaException

from platform_common.kafka import ENRICHED, Ack, Publisher, acknowledged
from platform_common.llm import make_llm
from platform_common.testing import consumer_lag
from rag.embedder import Embedder
from rag.service import RagService
from rag.settings import RagSettings

DOCUMENT = {"document_id": "resilience", "title": "Operational resilience of payment services",
            "doc_type": "regulation",
            "content": "Critical payment services must be restored within two hours after a disruption. A payment "
                       "terminal reading outside its range is reported to the operations team with the terminal "
                       "and the branch affected."}


def event(i: int, text_every: int) -> dict:
    now = int(time.time() * 1000)
    text = {"body": f"Reading {i} of payment terminal {i % 50} at the branch looks fine."} if i % text_every == 0 \
        else {}
    return {"event_id": f"b{i}", "delivery_id": f"b{i}", "source": "bench", "type": "reading",
            "stream_id": f"s{i % 50}", "tenant": "default", "occurred_at": now, "received_at": now,
            "text": text, "metrics": {"value": float(i)}, "attributes": {}, "raw_payload": "{}", "entities": [],
            "models": [], "enriched_at": now, "sentiment": []}


async def lag(settings: RagSettings, group: str) -> int:
    """The group's lag, read in a thread (the service runs on this loop); a group not yet known counts as behind."""
    try:
        return await asyncio.to_thread(consumer_lag, settings, group, settings.rag_enriched_topic)
    except KafkaException:
        return -1


async def run(mode: str, batch: int, events: int, text_every: int, embedder: Embedder) -> float:
    run_id = uuid.uuid4().hex[:8]
    settings = RagSettings(service_name="rag-bench", rag_db_schema=f"rag_backlog_{run_id}",
                           rag_documents_topic=f"bench.rag.documents.{run_id}",
                           rag_enriched_topic=f"bench.rag.enriched.{run_id}",
                           rag_contextualized_topic=f"bench.rag.contextualized.{run_id}",
                           rag_group=f"bench-rag-{run_id}", rag_instance_id=run_id, rag_contextualize_batch=batch)
    # no event here is selected for generation: an unreachable endpoint is never called
    llm = make_llm("openai", data_dir=settings.data_dir, url="http://127.0.0.1:9/v1", model="none")
    service = RagService(settings, llm=llm, embedder=embedder)
    await service.start()
    if mode == "per-record ack":
        handed_over = service.on_event

        async def on_event(value: dict, record: ConsumerRecord) -> Ack | None:
            await (await handed_over(value, record))
            return None
        service.consumers[1].record_handler = on_event
    publisher = Publisher(settings)
    await publisher.start()
    task = asyncio.create_task(service.run())
    group = f"{settings.rag_group}-contextualize"
    try:
        await service.indexer.apply(DOCUMENT)
        # one event first: the group has joined and the models are warm when the backlog is published
        await publisher.publish(settings.rag_enriched_topic, "s0", event(0, text_every), schema_of=ENRICHED)
        while await lag(settings, group):
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        await acknowledged([await publisher.enqueue(settings.rag_enriched_topic, f"s{i % 50}", event(i, text_every),
                                                    schema_of=ENRICHED) for i in range(1, events + 1)])
        while await lag(settings, group):
            await asyncio.sleep(0.1)
        return events / (time.perf_counter() - started)
    finally:
        task.cancel()
        await publisher.stop()
        await service.store.pool.execute(f"DROP SCHEMA {settings.rag_db_schema} CASCADE")
        await service.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([t for t in await admin.list_topics() if run_id in t])
        finally:
            await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--text-every", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    embedder = Embedder()
    print("| mode | batch | events/s |\n|---|---|---|")
    for mode in ("per-record ack", "batch acks"):
        for batch in args.batches:
            rate = await run(mode, batch, args.events, args.text_every, embedder)
            print(f"| {mode} | {batch} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
