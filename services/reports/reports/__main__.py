"""`python -m reports` runs the service; `python -m reports hash-password` makes a portal user's argon2id password
hash; `python -m reports check-config [FILE [USERS_FILE]]` validates the report definitions and the users."""

import getpass
import sys

from pydantic import ValidationError


def main(argv: list[str]) -> int:
    from .config import load_config
    from .settings import ReportsSettings
    from .signin import hash_password

    command = argv[0] if argv else "serve"
    if command == "hash-password":
        print(hash_password(getpass.getpass("password: ")))
        return 0
    settings = ReportsSettings()
    if command == "check-config":
        path = argv[1] if len(argv) > 1 else settings.reports_config
        users = argv[2] if len(argv) > 2 else settings.reports_users_file
        try:
            config = load_config(path, users)
        except (OSError, ValidationError, ValueError) as e:
            print(f"{path}: {e}".splitlines()[0] if isinstance(e, OSError) else f"{path}: {e}", file=sys.stderr)
            return 1
        print(f"{path}: {len(config.reports)} report definitions, {len(config.users)} users")
        return 0
    if command != "serve":
        print(f"unknown command {command!r} (serve, hash-password, check-config)", file=sys.stderr)
        return 2
    from platform_common.service import run_until_signalled

    from .service import run

    run_until_signalled(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
