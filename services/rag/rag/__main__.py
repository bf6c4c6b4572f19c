"""`python -m rag`: the consumers and the HTTP API in one process, until SIGTERM or SIGINT."""

import asyncio
import contextlib
import signal

from platform_common.ops import serve
from platform_common.service import init_service

from .api import create_app
from .service import RagService
from .settings import RagSettings


async def main() -> None:
    settings = RagSettings()
    init_service(settings)
    service = RagService(settings)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(service.run()), asyncio.create_task(serve(create_app(service), settings.rag_port))]
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    await service.stop()
    for task in done - {stopped}:
        task.result()  # a crashed consumer or server exits non-zero


if __name__ == "__main__":
    asyncio.run(main())
