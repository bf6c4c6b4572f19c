"""A consumer killed mid-batch skips nothing: offsets are committed only for processed records."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from platform_common.kafka import RAW, Publisher

WORKER = Path(__file__).with_name("consumer_worker.py")
TOTAL = 400


def handled(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_killed_consumer_skips_nothing(settings, topic, run_id, tmp_path):
    publisher = Publisher(settings)
    await publisher.start()
    ids = [f"evt-{n}" for n in range(TOTAL)]
    await asyncio.gather(*(publisher.publish(topic, f"s{n % 5}", {
        "event_id": i, "delivery_id": i, "source": "t", "type": "t", "stream_id": f"s{n % 5}",
        "occurred_at": 0, "received_at": 0, "raw_payload": "{}"}, schema_of=RAW) for n, i in enumerate(ids)))
    await publisher.stop()
    out = tmp_path / "handled.txt"

    def start():
        return subprocess.Popen([sys.executable, str(WORKER), topic, f"g-{run_id}", str(out)])

    worker = start()
    deadline = time.monotonic() + 60
    while len(handled(out)) < 60 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    first_run = handled(out)
    assert 60 <= len(first_run) < TOTAL, "the kill must land mid-stream"

    worker = start()
    try:
        deadline = time.monotonic() + 90
        while not set(ids) <= set(handled(out)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait()
    assert set(handled(out)) == set(ids)  # every record handled at least once, none skipped
