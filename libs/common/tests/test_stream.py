"""The stream runtime against the real Kafka: a process killed after its outputs were written but before its batch
committed. Read with read_committed, the output holds every input exactly once under exactly_once; under
at_least_once the same check finds the repeated outputs (so the check can fail). And the after-commit step runs
only for batches that committed, and the assignment hook gets the partitions."""

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from platform_common.kafka import ensure_topics
from platform_common.settings import CommonSettings
from platform_common.stream import Stream, stream_publisher
from platform_common.testing import drop_topics, read_messages

WORKER = Path(__file__).with_name("stream_worker.py")
TOTAL = 300


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
async def test_a_kill_between_outputs_and_commit(settings, run_id, tmp_path, guarantee):
    source, target = f"test.stream.in.{run_id}", f"test.stream.out.{run_id}"
    await ensure_topics(settings, [source, target])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for n in range(TOTAL):
            # one partition's worth of order does not matter here; the crash record sits in the middle
            key = b"crash" if n == TOTAL // 2 else f"k{n % 7}".encode()
            await producer.send(source, f"v{n}".encode(), key=key)
        await producer.flush()
    finally:
        await producer.stop()

    flag = tmp_path / "crashed"
    args = [sys.executable, str(WORKER), source, target, f"g-{run_id}", guarantee, str(flag)]
    try:
        first = subprocess.run(args, timeout=120)
        assert first.returncode == -9 and flag.exists(), "the worker must die by its own SIGKILL mid-stream"
        second = subprocess.Popen(args)
        try:
            deadline = time.monotonic() + 90
            seen: Counter = Counter()
            while time.monotonic() < deadline:
                seen = Counter(m.value() for m in read_messages(settings, target, 2 * TOTAL, timeout=8))
                if len(seen) == TOTAL:
                    break
        finally:
            second.terminate()
            second.wait(30)
        repeated = sum(n - 1 for n in seen.values())
        assert set(seen) == {f"v{n}".encode() for n in range(TOTAL)}, f"{TOTAL - len(seen)} inputs have no output"
        if guarantee == "exactly_once":
            assert repeated == 0, f"{repeated} outputs repeated under exactly_once"
        else:
            assert repeated > 0, "at-least-once repeats the crashed batch's outputs; the check must see them"
    finally:
        drop_topics(settings, [source, target])


async def test_after_commit_follows_each_committed_batch_and_no_aborted_one(settings, run_id):
    source, target, group = f"test.stream.in.{run_id}", f"test.stream.out.{run_id}", f"g-{run_id}"
    await ensure_topics(settings, [source, target])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for n in range(20):
            await producer.send(source, f"v{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    publisher = stream_publisher(CommonSettings(service_name="stream-test"), "exactly_once", group)
    steps: list[str] = []
    copied = {"batch": 0, "committed": 0}

    async def copy(records) -> None:
        for r in records:
            await publisher.producer.send_and_wait(target, r.value)
        steps.append("batch")
        copied["batch"] = len(records)
        if steps.count("batch") == 1:
            raise RuntimeError("the first attempt fails after its outputs")

    async def committed() -> None:
        steps.append("after_commit")
        copied["committed"] += copied["batch"]

    assigned: list[set] = []

    async def given(partitions: set) -> None:
        assigned.append({tp.partition for tp in partitions if tp.topic == source})

    async def extra() -> None:
        await publisher.producer.send_and_wait(target, b"extra")
        steps.append("outside")

    stream = Stream(settings, [source], group, publisher, copy, batch_size=10, retry_wait=0.05,
                    after_commit=committed, on_assigned=given)
    await publisher.start()
    await stream.start()
    run = asyncio.create_task(stream.run())
    try:
        for _ in range(200):
            if copied["committed"] == 20:
                break
            await asyncio.sleep(0.1)
        await stream.outside_batch(extra)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await stream.stop()
        await publisher.stop()
    try:
        assert steps[:2] == ["batch", "batch"], steps  # the aborted attempt is not followed by the step
        batches = steps[1:-2]
        assert batches == ["batch", "after_commit"] * (len(batches) // 2), steps
        assert steps[-2:] == ["outside", "after_commit"], steps
        assert assigned == [set(range(settings.kafka_partitions))]  # the one consumer of the group holds them all
        seen = Counter(m.value() for m in read_messages(settings, target, 30, timeout=8))
        assert seen == Counter([f"v{n}".encode() for n in range(20)] + [b"extra"])  # the aborted copies are not
    finally:
        drop_topics(settings, [source, target])
