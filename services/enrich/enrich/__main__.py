"""`python -m enrich`: creates the topics if missing and runs the service until SIGINT/SIGTERM."""

import logging

from platform_common.kafka import ensure_topics
from platform_common.service import init_service, run_until_signalled

from .app import run
from .pii import install_log_masking
from .settings import EnrichSettings


async def start(settings: EnrichSettings) -> None:
    await ensure_topics(settings, [settings.enrich_input_topic, settings.enrich_output_topic])
    await run(settings)


def main() -> None:
    settings = EnrichSettings()
    init_service(settings)
    install_log_masking()
    logging.getLogger(__name__).info("enrich starting on %s (%s)", settings.enrich_input_topic,
                                     settings.enrich_processing_guarantee)
    run_until_signalled(start(settings))


if __name__ == "__main__":
    main()
