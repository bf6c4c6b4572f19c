"""`python -m rag`: the consumers and the HTTP API in one process, until SIGTERM or SIGINT."""

import asyncio
import contextlib
import signal

import uvicorn

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
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=settings.rag_host, port=settings.rag_port,
                                          log_config=None, access_log=False))
    # the signals are ours: stop consumers and server together (uvicorn's serve() would take them over)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]
    consumers, http = asyncio.create_task(service.run()), asyncio.create_task(server.serve())
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([consumers, http, stopped], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True  # lets in-flight requests finish
    consumers.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumers
    await http
    await service.stop()
    for task in done - {stopped}:
        task.result()  # a crashed consumer or server exits non-zero


if __name__ == "__main__":
    asyncio.run(main())
