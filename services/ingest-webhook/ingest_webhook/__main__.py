"""`python -m ingest_webhook`: checks the sources and their secrets, then serves on INGEST_PORT (default 8000)."""

import os
import sys

import uvicorn

from .settings import IngestSettings
from .sources import SourceConfigError, load_sources, missing_dev_secrets, read_config


def main() -> None:
    settings = IngestSettings()
    try:
        if settings.ingest_dev_secrets:
            for variable, secret in missing_dev_secrets(read_config(settings.ingest_sources_file), os.environ).items():
                os.environ[variable] = secret  # inherited by the uvicorn workers
                print(f"ingest-webhook: development secret {variable}={secret}", file=sys.stderr, flush=True)
        load_sources(settings.ingest_sources_file, os.environ)
    except SourceConfigError as e:
        print(f"ingest-webhook: {e}", file=sys.stderr)
        sys.exit(2)
    uvicorn.run("ingest_webhook.app:create_app", factory=True, host=settings.ingest_host, port=settings.ingest_port,
                workers=settings.ingest_workers, loop="uvloop", http="httptools", log_config=None,
                access_log=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
