"""`python -m anomaly`: runs the anomaly service until SIGINT/SIGTERM."""

import logging

from platform_common.service import init_service, run_until_signalled

from .app import run
from .settings import AnomalySettings


def main() -> None:
    settings = AnomalySettings()
    init_service(settings)
    logging.getLogger(__name__).info("anomaly starting on %s (%s)", settings.anomaly_source_topic,
                                     settings.anomaly_processing_guarantee)
    run_until_signalled(run(settings))


if __name__ == "__main__":
    main()
