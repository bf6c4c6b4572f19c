"""`python -m notify`: runs the service until SIGINT/SIGTERM."""

import sys

from pydantic import ValidationError

from platform_common.auth import KeyStore
from platform_common.service import run_until_signalled

from .app import main
from .routing import RoutingConfig
from .settings import NotifySettings


def run() -> None:
    try:
        settings = NotifySettings()
        RoutingConfig.load(settings.notify_routes_file)  # a bad routes file stops here with one line
        KeyStore.from_env()  # and so does a bad API_KEYS / API_KEYS_FILE
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        sys.exit(f"notify: bad configuration ({e.title}): {where + ': ' if where else ''}{first['msg']}")
    except (ValueError, OSError) as e:
        sys.exit(f"notify: bad configuration: {e}")

    run_until_signalled(main(settings))

if __name__ == "__main__":
    run()
