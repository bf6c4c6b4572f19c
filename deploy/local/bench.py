"""`make bench`: runs every service's bench.py against the running stack and writes BENCHMARKS.md.

Each bench prints one markdown section with its figures, its baseline measured in the same run and its command.
"""

import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["ingest-webhook", "enrich", "anomaly", "notify", "rag", "reports"]


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def main() -> int:
    only = sys.argv[1:]
    sections, failed = [], []
    for name in ORDER:
        script = ROOT / "services" / name / "bench.py"
        if not script.exists() or (only and name not in only):
            continue
        print(f"bench: {name} ...", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script.relative_to(ROOT))], cwd=ROOT, capture_output=True,
                                text=True)
        if result.returncode != 0:
            failed.append(name)
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            sections.append(f"## {name}\n\nbench failed (exit {result.returncode}):\n\n```\n{tail}\n```\n")
        else:
            sections.append(result.stdout.strip() + "\n")
        print(f"bench: {name} done in {time.monotonic() - started:.0f}s", flush=True)
    header = (f"# Benchmarks\n\nWritten by `make bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{machine()}, against the local stack of `make up`. Each section names the command that produced it; "
              "baselines are measured in the same run, since this machine is shared and noisy.\n\n")
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(sections))
    print(f"bench: wrote {ROOT / 'BENCHMARKS.md'}")
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
