"""`python -m rag`: the consumers and the HTTP API in one process, until SIGTERM or SIGINT."""

import asyncio
import contextlib

import uvicorn

from platform_common.service import init_service, run_until_signalled

from .api import create_app
from .service import RagService
from .settings import RagSettings


async def run(settings: RagSettings) -> None:
    service = RagService(settings)
    await service.start()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=settings.rag_host, port=settings.rag_port,
                                          log_config=None, access_log=False))
    # the signals are the runner's: it stops consumers and server together (uvicorn's serve() would take them over)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]
    consumers, http = asyncio.create_task(service.run()), asyncio.create_task(server.serve())
    try:
        done, _ = await asyncio.wait([consumers, http], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a crashed consumer or server exits non-zero
    finally:
        server.should_exit = True  # lets in-flight requests finish
        consumers.cancel()
        await asyncio.gather(consumers, http, return_exceptions=True)
        await service.stop()


def main() -> None:
    settings = RagSettings()
    init_service(settings)
    run_until_signalled(run(settings))


if __name__ == "__main__":
    main()
