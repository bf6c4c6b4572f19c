"""`make run`: every service of the platform on this machine, with prefixed logs (honcho), on the stack of `make up`.

Development settings (webhook secrets, local PagerDuty/Slack receivers) come from deploy/local/dev.env; any variable
already set in the environment wins over it.
"""

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def dev_env() -> dict[str, str]:
    pairs = (line.partition("=") for line in (HERE / "dev.env").read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, _, value in pairs}


def main() -> None:
    for key, value in dev_env().items():
        os.environ.setdefault(key, value)
    print("starting the platform (Ctrl-C stops the services; `make down` stops the stack):", flush=True)
    for name in ("WEBHOOK_SECRET_DEMO", "WEBHOOK_SECRET_GITHUB", "WEBHOOK_SECRET_STRIPE", "WEBHOOK_SECRET_METER"):
        print(f"  development secret {name}={os.environ.get(name, '')}", flush=True)
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '')}"  # the Procfile's `python` is the venv's
    honcho = shutil.which("honcho", path=venv_bin)
    os.chdir(ROOT)
    os.execv(honcho, [honcho, "start", "-f", str(HERE / "Procfile"), "-d", str(ROOT)])


if __name__ == "__main__":
    main()
