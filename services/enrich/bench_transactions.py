"""The cost of exactly-once in enrich: the same service with ENRICH_PROCESSING_GUARANTEE=exactly_once (a Kafka
transaction per batch) and at_least_once (offsets committed after the outputs), alternating in one run.

- events/s: a pre-filled raw topic of text events through one `python -m enrich` (first to last enriched record);
- latency: text events published at a steady rate while a read_committed consumer takes the outputs; p50/p95 of
  (output seen by the consumer - input published), which includes the wait for the transaction's commit.

Prints one markdown section for BENCHMARKS.md. Run: .venv/bin/python services/enrich/bench_transactions.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench import SETTINGS, TEXTS, commit, pct, prepublish, through_service
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from enrich.testing import EnrichProcess, raw_event
from platform_common.kafka import RAW, Publisher, ensure_topics

GUARANTEES = ("exactly_once", "at_least_once")


def text_events(n: int, tag: str) -> list[dict]:
    return [raw_event({"body": TEXTS[i % len(TEXTS)]}, stream_id=f"s-{i % 50}", event_id=f"{tag}-{i}")
            for i in range(n)]


def seen_at(topic: str, expected: int, timeout: float, out: dict[str, float], ready: threading.Event) -> None:
    """Wall-clock time at which a read_committed consumer sees each output's event id."""
    consumer = Consumer({"bootstrap.servers": SETTINGS.kafka_bootstrap_servers, "group.id": f"lat-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    decode = AvroDeserializer(SchemaRegistryClient({"url": SETTINGS.schema_registry_url}))
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if not msg.error():
                    out.setdefault(decode(msg.value(), SerializationContext(topic, MessageField.VALUE))["event_id"],
                                   time.time())
            if consumer.assignment():
                ready.set()
    finally:
        consumer.close()


async def paced(topic: str, events: list[dict], rate: float, sent: dict[str, float]) -> None:
    publisher = Publisher(SETTINGS)
    await publisher.start()
    try:
        started = time.monotonic()
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            sent[event["event_id"]] = time.time()
            await publisher.publish(topic, event["stream_id"], event, schema_of=RAW)
    finally:
        await publisher.stop()


def latency(guarantee: str, workdir: Path, rate: float, seconds: float) -> tuple[float, float]:
    service = EnrichProcess(f"lat{uuid.uuid4().hex[:8]}", workdir, ENRICH_PROCESSING_GUARANTEE=guarantee)
    asyncio.run(ensure_topics(SETTINGS, [service.input, service.output]))
    asyncio.run(prepublish(service.input, text_events(50, "warm")))  # the first batch loads the models
    service.start()
    try:
        events = text_events(int(rate * seconds), "lat")
        seen: dict[str, float] = {}
        sent: dict[str, float] = {}
        ready = threading.Event()
        reader = threading.Thread(target=seen_at, args=(service.output, len(events) + 50, seconds + 60, seen, ready))
        reader.start()
        ready.wait(30)
        asyncio.run(paced(service.input, events, rate, sent))
        reader.join()
    finally:
        service.stop()
        service.cleanup()
    samples = [(seen[i] - t) * 1000 for i, t in sent.items() if i in seen]
    missing = len(sent) - len(samples)
    if missing:
        raise RuntimeError(f"{guarantee}: {missing} of {len(sent)} events not seen")
    return pct(samples, 50), pct(samples, 95)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0, help="text events/s of the latency runs")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {g: {"rate": [], "p50": [], "p95": []} for g in GUARANTEES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            for guarantee in GUARANTEES:
                _, rate, _ = through_service(text_events(args.events, "tp"), Path(tmp),
                                             ENRICH_PROCESSING_GUARANTEE=guarantee)
                p50, p95 = latency(guarantee, Path(tmp), args.rate, args.seconds)
                for key, value in (("rate", rate), ("p50", p50), ("p95", p95)):
                    figures[guarantee][key].append(value)
                print(f"round {round_}/{args.rounds} {guarantee}: {rate:,.0f} events/s, latency p50 {p50:.0f} ms, "
                      f"p95 {p95:.0f} ms", file=sys.stderr, flush=True)
    print("## transactions\n")
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}: enrich (local backend, "
          f"the fine-tuned encoder on every text) with and without Kafka transactions, alternating, median of "
          f"{args.rounds} rounds. events/s: {args.events} pre-filled text events, first to last output. Latency: "
          f"{args.rate:.0f} text events/s for {args.seconds:.0f} s, published to seen by a read_committed consumer.\n")
    print("| guarantee | events/s | latency p50 ms | latency p95 ms |\n|---|---|---|---|")
    for guarantee, f in figures.items():
        print(f"| {guarantee} | {statistics.median(f['rate']):,.0f} | {statistics.median(f['p50']):.0f} | "
              f"{statistics.median(f['p95']):.0f} |")
    print(f"\nCommand: `.venv/bin/python services/enrich/bench_transactions.py --rounds {args.rounds}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
