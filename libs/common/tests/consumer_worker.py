"""A ReliableConsumer in its own process, for the kill test: appends each handled event id to a file, slowly."""

import asyncio
import os
import sys

from platform_common.kafka import Publisher
from platform_common.settings import CommonSettings
from platform_common.stream import ReliableConsumer


async def main(topic: str, group: str, out_path: str) -> None:
    settings = CommonSettings(service_name="consumer-worker")
    out = open(out_path, "a")

    async def handler(value, record):
        out.write(value["event_id"] + "\n")
        out.flush()
        os.fsync(out.fileno())
        await asyncio.sleep(0.01)

    publisher = Publisher(settings)
    await publisher.start()
    consumer = ReliableConsumer(settings, [topic], group, handler, publisher)
    await consumer.start()
    await consumer.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
