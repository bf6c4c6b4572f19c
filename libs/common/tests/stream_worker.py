"""A platform Stream in its own process, for the crash test: copies each input record to the output topic and, the
first time it meets the record whose key is `crash`, kills itself after the copies of its batch were acknowledged
by Kafka but before the batch commits (the window in which at-least-once repeats outputs)."""

import asyncio
import os
import signal
import sys
from pathlib import Path

from platform_common.settings import CommonSettings
from platform_common.stream import Stream, stream_publisher


async def main(source: str, target: str, group: str, guarantee: str, crashed_flag: str) -> None:
    settings = CommonSettings(service_name="stream-worker")
    publisher = stream_publisher(settings, guarantee, group)  # type: ignore[arg-type]
    flag = Path(crashed_flag)

    async def copy(records) -> None:
        for r in records:
            await publisher.producer.send_and_wait(target, r.value, key=r.key)
        if not flag.exists() and any(r.key == b"crash" for r in records):
            flag.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    stream = Stream(settings, [source], group, publisher, copy, guarantee=guarantee,  # type: ignore[arg-type]
                    batch_size=50)
    await publisher.start()
    await stream.start()
    await stream.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
