"""SIGKILL of the enrich process mid-stream, then a restart: every raw event gets its enriched counterpart."""

import asyncio
import time

from enrich.testing import TopicReader, publish_raw, raw_event


async def test_killed_mid_stream_and_restarted_loses_no_event(enrich_process, publisher, common_settings):
    service = enrich_process(ENRICH_STREAM_BATCH="50")
    events = [raw_event({"body": f"Order {i} from Acme Holdings Inc. in Paris cost ${i}.99, thanks!"},
                        stream_id=f"stream-{i % 7}") for i in range(3000)]
    ids = {e["event_id"] for e in events}
    await publish_raw(publisher, common_settings, service.input, events[:1])
    service.start()

    async def produce_rest():
        for start in range(1, len(events), 100):
            await asyncio.gather(*(publisher.publish(service.input, e["stream_id"], e, schema_of="events.raw.v1")
                                   for e in events[start:start + 100]))
            await asyncio.sleep(0.05)

    producing = asyncio.create_task(produce_rest())
    reader = TopicReader(common_settings, service.output)
    try:
        deadline = time.monotonic() + 60
        while reader.count < 300 and time.monotonic() < deadline:
            await asyncio.to_thread(reader.poll_until, ids, 0.2)
        before_kill = reader.count
        service.kill()
        assert 0 < before_kill < len(events), f"not mid-stream: {before_kill} enriched before the kill"
        await producing
        service.start()
        found = await asyncio.to_thread(reader.poll_until, ids, 90)
    finally:
        reader.close()
        producing.cancel()
    missing = ids - found.keys()
    print(f"\n{before_kill} enriched before SIGKILL, {reader.count} records read in all "
          f"({reader.count - len(ids)} re-deliveries), {len(missing)} missing")
    assert not missing
