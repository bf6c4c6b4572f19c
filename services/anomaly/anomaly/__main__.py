"""`python -m anomaly`: runs the anomaly service (Faust worker plus /healthz, /readyz, /metrics)."""

import faust

from platform_common.service import init_service

from .service import create_app
from .settings import AnomalySettings


def main() -> None:
    settings = AnomalySettings()
    init_service(settings)
    app, _ = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level, override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
