"""A poison record in the input of every consuming service reaches `<topic>.dlq` with the same headers from every
service: one dead-letter writer (`platform_common.kafka.dead_letter`), whatever the service's stream."""

import asyncio
import time

from aiokafka import AIOKafkaProducer

from platform_common.kafka import dlq
from platform_common.testing import read_messages

SERVICES = ("enrich", "anomaly", "rag", "notify", "reports")
HEADERS = {"dlq.reason", "dlq.exception.type", "dlq.stack", "dlq.source.topic", "dlq.source.partition",
           "dlq.source.offset", "dlq.consumer.group"}
INPUTS = ("events.raw.v1", "events.enriched.v1", "anomalies.v1")


async def test_a_poison_record_reaches_the_dlq_with_the_same_headers_from_every_service(start_platform, settings,
                                                                                       run_id):
    platform = start_platform(SERVICES)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for name in INPUTS:
            await producer.send_and_wait(platform.topics[name], b"\x00\x00\x00\x00\x63not avro",
                                         key=f"poison-{name}".encode(), headers=[("origin", b"test")])
    finally:
        await producer.stop()

    groups = {group for group, _ in platform.groups.values()}
    found: dict[str, dict[str, bytes]] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and set(found) < groups:
        for name in INPUTS:
            for msg in await asyncio.to_thread(read_messages, settings, dlq(platform.topics[name]), 10, 3):
                headers = {k: v for k, v in msg.headers() or ()}
                found[headers.get("dlq.consumer.group", b"?").decode()] = headers
    assert set(found) >= groups, f"no dead letter from {groups - set(found)}\n{platform.logs()}"
    for group, headers in found.items():
        assert set(headers) >= HEADERS, f"{group}: missing {HEADERS - set(headers)}"
        assert headers["origin"] == b"test", f"{group} dropped the original headers"
        assert headers["dlq.stack"].startswith(b"Traceback"), group
