"""`python -m ingest_webhook`: checks the sources and their secrets, then serves on INGEST_PORT (default 8000)
in INGEST_WORKERS processes."""

import os
import shutil
import socket
import sys
import tempfile
from typing import Any, cast

import uvicorn
from uvicorn.supervisors import Multiprocess

from .listener import ReusePortListener
from .settings import IngestSettings
from .sources import SourceConfigError, is_loopback, load_sources, missing_dev_secrets, read_config


def main() -> None:
    settings = IngestSettings()
    host = settings.listen_host
    try:
        if settings.ingest_dev_secrets:
            if not is_loopback(host):
                raise SourceConfigError(f"INGEST_DEV_SECRETS=1 is refused on {host}: development secrets are "
                                        "published, so they only serve on loopback (INGEST_HOST=127.0.0.1)")
            for variable, secret in missing_dev_secrets(read_config(settings.ingest_sources_file), os.environ).items():
                os.environ[variable] = secret  # inherited by the uvicorn workers
                print(f"ingest-webhook: development secret {variable}={secret}", file=sys.stderr, flush=True)
        load_sources(settings.ingest_sources_file, os.environ)
    except SourceConfigError as e:
        print(f"ingest-webhook: {e}", file=sys.stderr)
        sys.exit(2)
    app = "ingest_webhook.app:create_app"
    options: dict[str, Any] = dict(factory=True, host=host, port=settings.ingest_port, loop="uvloop",
                                   http="httptools", log_config=None, access_log=False, timeout_graceful_shutdown=5)
    if settings.ingest_workers == 1:
        uvicorn.run(app, **options)
        return
    try:
        listener = ReusePortListener(host, settings.ingest_port)
    except OSError as e:
        print(f"ingest-webhook: cannot listen on {host}:{settings.ingest_port}: {e.strerror}",
              file=sys.stderr)
        sys.exit(1)
    # each worker counts into files of its own there, and whichever worker is scraped sums them all (ops.py);
    # a directory given by the operator is theirs to empty between runs, as prometheus_client documents
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = given or tempfile.mkdtemp(prefix="ingest-webhook-metrics-")
    try:
        # unpickled in each worker as that worker's own socket (listener.py)
        sockets = [cast(socket.socket, listener)]
        Multiprocess(uvicorn.Config(app, workers=settings.ingest_workers, **options), sockets=sockets).run()
    finally:
        if not given:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
