"""`python -m enrich`: creates the topics if missing and runs the Faust worker."""

import asyncio
import logging

import faust
from platform_common.kafka import ensure_topics
from platform_common.service import init_service

from .app import create_app
from .pii import install_log_masking
from .settings import EnrichSettings


def main() -> None:
    settings = EnrichSettings()
    asyncio.run(ensure_topics(settings, [settings.enrich_input_topic, settings.enrich_output_topic]))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level)
    # the worker installs its own log handlers on start; JSON logs and masking go on top of them
    init_service(settings)
    install_log_masking()
    logging.getLogger(__name__).info("enrich starting on %s", settings.enrich_input_topic)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
