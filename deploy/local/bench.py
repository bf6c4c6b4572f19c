"""`make bench`: runs every service's bench.py, then the whole pipeline's, against the running stack and writes
BENCHMARKS.md (`make bench BENCH="enrich pipeline"` runs only those; the other sections are kept).

Each bench prints one markdown section with its figures, its baseline measured in the same run and its command.
"""

import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHES = {**{name: ROOT / "services" / name / "bench.py"
              for name in ("ingest-webhook", "enrich", "anomaly", "notify", "rag", "reports")},
           "transactions": ROOT / "services" / "enrich" / "bench_transactions.py",
           "llm": ROOT / "deploy" / "local" / "bench_llm.py",
           "pipeline": ROOT / "deploy" / "local" / "bench_pipeline.py"}


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def previous_sections(path: Path) -> dict[str, str]:
    """The sections of the last BENCHMARKS.md by bench name, kept when only some benches run."""
    if not path.exists():
        return {}
    parts = path.read_text().split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip(): "## " + part.rstrip() + "\n" for part in parts}


def main() -> int:
    only = sys.argv[1:]
    previous = previous_sections(ROOT / "BENCHMARKS.md")
    sections, failed = [], []
    for name, script in BENCHES.items():
        if only and name not in only:
            sections.append(previous.get(name, ""))
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
              "baselines are measured in the same run, since this machine is shared and noisy."
              + (f" This run: {', '.join(only)}; the other sections are from earlier runs." if only else "") + "\n\n")
    # sections written by hand (a rerun's notes, a one-off measurement) are kept after the benches'
    sections += [text for name, text in previous.items() if name not in BENCHES]
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(s for s in sections if s))
    print(f"bench: wrote {ROOT / 'BENCHMARKS.md'}")
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
