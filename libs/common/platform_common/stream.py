"""The platform's one consumer loop: consume-transform-produce between Kafka topics, exactly once (Kafka transactions
through aiokafka), or at least once for stages whose sinks are idempotent.

With `exactly_once`, the records a batch handler sends through the stream's publisher and the batch's consumed
offsets are committed in one transaction. A consumer reading the outputs with `isolation.level=read_committed` sees
every input's outputs exactly once, also when the process is killed mid-batch: the open transaction is aborted when
the same transactional id starts again (or after the transaction timeout), and its inputs are processed again.
`at_least_once` commits the offsets after the outputs were acknowledged instead; a crash in between repeats them.
Either way a batch handler returns only once every output it sent is acknowledged (it may hand them all to the
producer first and await the acks together, `kafka.Refusals`): aiokafka commits a transaction without waiting for
records still in flight, and a record the broker refuses does not fail the transaction, so an output not awaited
could be lost while its input is committed. An input whose output the broker refuses outright (too large for its
topic) fails its batch `consumer_max_attempts` times, then is dead-lettered with the refusal.

Error policy: a bad record is the handler's to dead-letter (`ReliableConsumer` does it for per-record handlers:
bounded retries, then `kafka.dead_letter`); a failing batch (Kafka or a dependency down) is aborted and retried in
place with backoff, so nothing is skipped and nothing is committed meanwhile. A rebalance waits for the batch in
flight, and records of partitions this consumer no longer owns are dropped before processing (their new owner
processes them).

`after_commit` runs once a batch committed (never for an aborted attempt), even when the stream is being cancelled:
a stage that keeps state outside Kafka saves it there, so a batch aborted and processed again finds the state it
started from. Outputs no consumed record drives (a model finished training) go through `outside_batch`, between
batches, in a transaction of their own followed by the same `after_commit`; `on_assigned` gets the partitions this
consumer was just given, between batches, so such a stage resumes work it owes them without waiting for a record.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import ConsumerRecord
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from .kafka import CONSUMED, PROCESS_SECONDS, RECORD_AGE, Ack, Publisher, Refusals, dead_letter
from .retry import until_available
from .settings import CommonSettings
from .tracing import process_span

log = logging.getLogger(__name__)

Guarantee = Literal["exactly_once", "at_least_once"]
BatchHandler = Callable[[list[ConsumerRecord]], Awaitable[None]]
# a record handler publishing an output returns its ack (`Publisher.enqueue`): the batch commits once all are acked
RecordHandler = Callable[[dict, ConsumerRecord], Awaitable[Ack | None]]
# work done once for a whole batch's decoded values before they are handled one by one (rag embeds their queries)
BatchPreparer = Callable[[list[dict]], Awaitable[None]]
Step = Callable[[], Awaitable[None]]
Assigned = Callable[[set[TopicPartition]], Awaitable[None]]


def transactional_id(group_id: str, instance: str | None = None) -> str:
    """Stable across restarts of one instance, so a restarted process fences its killed predecessor at once."""
    return f"{group_id}-{instance or socket.gethostname()}"


def stream_publisher(settings: CommonSettings, guarantee: Guarantee, group_id: str,
                     instance: str | None = None) -> Publisher:
    """The publisher a stream's handler sends through: transactional for `exactly_once`."""
    if guarantee == "exactly_once":
        return Publisher(settings, transactional_id=transactional_id(group_id, instance))
    return Publisher(settings)


class _WaitForBatch(ConsumerRebalanceListener):
    def __init__(self, lock: asyncio.Lock, on_assigned: Assigned | None):
        self.lock, self.on_assigned = lock, on_assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.lock:  # the batch in flight commits (or aborts) before its partitions move
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.on_assigned is not None:
            async with self.lock:
                await self.on_assigned(set(assigned))


class Stream:
    """`handler` gets each batch; it sends its outputs through `publisher`, which the caller starts and stops (one
    publisher may serve several streams; under exactly_once it must be this stream's own, see `stream_publisher`)."""

    def __init__(self, settings: CommonSettings, topics: list[str], group_id: str, publisher: Publisher,
                 handler: BatchHandler, guarantee: Guarantee = "exactly_once", batch_size: int = 500,
                 batch_wait_ms: int = 500, linger_ms: int = 0, retry_wait: float = 0.2,
                 after_commit: Step | None = None, on_assigned: Assigned | None = None, **consumer_options: Any):
        self.topics, self.group_id, self.publisher, self.handler = topics, group_id, publisher, handler
        self.guarantee, self.after_commit = guarantee, after_commit
        self.batch_size, self.batch_wait_ms, self.linger_ms = batch_size, batch_wait_ms, linger_ms
        self.retry_wait = retry_wait
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",  # never an aborted upstream transaction's outputs
            auto_offset_reset=consumer_options.pop("auto_offset_reset", "earliest"),
            client_id=f"{settings.service_name}-{group_id}",
            **consumer_options,
        )
        self._batch = asyncio.Lock()
        self.consumer.subscribe(topics, listener=_WaitForBatch(self._batch, on_assigned))

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        """After `run` was cancelled: a batch cancelled mid-transaction was aborted, so its inputs come again."""
        await self.consumer.stop()

    async def run(self, batch_timeout_ms: int | None = None, max_records: int | None = None) -> None:
        while True:
            batches = await self._next_batch(batch_timeout_ms or self.batch_wait_ms, max_records or self.batch_size)
            async with self._batch:
                owned = self.consumer.assignment()
                batches = {tp: records for tp, records in batches.items() if tp in owned and records}
                if batches:
                    await self._process(batches)

    async def _next_batch(self, wait_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Waits up to `wait_ms` for a first record, then lingers up to `linger_ms` for the batch to fill: under a
        light load a batch (and its transaction) otherwise holds a record or two, and the per-transaction round trips
        would cost more than the records."""
        batches = await self.consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
        count = sum(len(records) for records in batches.values())
        deadline = asyncio.get_running_loop().time() + self.linger_ms / 1000
        while batches and count < max_records:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            more = await self.consumer.getmany(timeout_ms=int(left * 1000) or 1, max_records=max_records - count)
            for tp, records in more.items():
                held = batches.setdefault(tp, [])
                # only what follows the held records: a partition re-assigned meanwhile is fetched again from its
                # committed offset, and a record must not be processed twice in one batch
                fresh = [r for r in records if not held or r.offset > held[-1].offset]
                held += fresh
                count += len(fresh)
        return batches

    async def _process(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        records = [r for part in batches.values() for r in part]
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items()}
        wait = self.retry_wait
        while True:
            try:
                if self.guarantee == "exactly_once":
                    async with self.publisher.producer.transaction():
                        await self.handler(records)
                        await self.publisher.producer.send_offsets_to_transaction(offsets, self.group_id)
                else:
                    await self.handler(records)
                    await self.consumer.commit(offsets)
                break
            except ProducerFenced:
                raise  # another process took over this transactional id: this one must stop
            except Exception as e:
                log.warning("batch of %d records from %s failed, retrying in %.1fs: %s: %s", len(records),
                            sorted({tp.topic for tp in batches}), wait, type(e).__name__, e)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
        committed = time.time()
        for tp, part in batches.items():
            age = RECORD_AGE.labels(tp.topic, self.group_id)
            for record in part:
                age.observe(max(0.0, committed - record.timestamp / 1000))
        await self._after_commit()

    async def outside_batch(self, work: Step) -> None:
        """Runs `work`, which sends outputs no consumed record drives, between batches: in a transaction of its own
        under exactly_once, then `after_commit`. A failure is raised (and the transaction aborted): the caller
        decides whether to try again."""
        async with self._batch:
            if self.guarantee == "exactly_once":
                async with self.publisher.producer.transaction():
                    await work()
            else:
                await work()
            await self._after_commit()

    async def _after_commit(self) -> None:
        if self.after_commit is None:
            return
        step = asyncio.ensure_future(self.after_commit())
        try:
            await asyncio.shield(step)
        except asyncio.CancelledError:
            await step  # the commit happened: what must follow it is done before the stream stops
            raise


class ReliableConsumer(Stream):
    """A stream whose handler takes one decoded record at a time, `handler(value, record)`, in order, under the
    platform's per-record error policy: an undecodable record is dead-lettered at once; a handler failing because a
    dependency is down (`retry.UNAVAILABLE`) is waited out in place; any other failure is retried `max_attempts`
    times, then the record is dead-lettered and the stream carries on. At least once by default: sinks are
    idempotent on their keys.

    A handler that publishes its output with `Publisher.enqueue` returns the ack instead of waiting for it: the
    records of a batch are handled one after another without a broker round trip each, and the batch's acks are
    awaited together before its offsets (or its transaction) commit. An output the broker refuses fails the whole
    batch, which is retried like any failing batch (under exactly_once its transaction is aborted first): an input is
    never committed without its output. An input whose output the broker refused outright `max_attempts` times is
    dead-lettered with the refusal when its batch comes again."""

    def __init__(self, settings: CommonSettings, topics: list[str], group_id: str, handler: RecordHandler,
                 publisher: Publisher, max_attempts: int | None = None, retry_wait: float = 0.2,
                 guarantee: Guarantee = "at_least_once", prepare: BatchPreparer | None = None,
                 **consumer_options: Any):
        super().__init__(settings, topics, group_id, publisher, self._each, guarantee=guarantee,
                         batch_wait_ms=500, retry_wait=retry_wait, **consumer_options)
        self.record_handler = handler
        self.prepare = prepare
        self.max_attempts = max_attempts or settings.consumer_max_attempts
        self.refusals = Refusals(self.max_attempts)

    async def _each(self, records: list[ConsumerRecord]) -> None:
        decoded: list[tuple[ConsumerRecord, dict]] = []
        sent: list[tuple[ConsumerRecord, Ack]] = []
        try:
            for record in records:
                try:
                    decoded.append((record, await self.publisher.serde.decode(record.value)))
                except Exception as e:  # undecodable: retrying cannot help
                    await self.dead_letter(record, e)
            if self.prepare is not None and decoded:
                try:  # an optimisation only: each record is handled the same without it
                    await self.prepare([value for _, value in decoded])
                except Exception as e:
                    log.warning("preparing a batch of %d records failed: %s: %s", len(decoded), type(e).__name__, e)
            for record, value in decoded:
                if (refusal := self.refusals.given_up(record)) is not None:
                    await self.dead_letter(record, refusal)
                elif (ack := await self.process(record, value)) is not None:
                    sent.append((record, ack))
        except Exception:  # nothing of a failed batch is still in flight when it is aborted and retried
            await asyncio.gather(*(ack for _, ack in sent), return_exceptions=True)
            raise
        await self.refusals.acknowledged(sent)

    async def process(self, record: ConsumerRecord, value: dict) -> Ack | None:
        labels = (record.topic, self.group_id)
        with process_span(record.topic, self.group_id, record.headers, record.partition, record.offset), \
                PROCESS_SECONDS.labels(*labels).time():
            try:
                ack = await until_available(lambda: self._handle(value, record), f"a dependency of {self.group_id}")
            except Exception as e:
                await self.dead_letter(record, e)
                return None
        CONSUMED.labels(*labels, "ok").inc()
        return ack

    async def _handle(self, value: dict, record: ConsumerRecord) -> Ack | None:
        """The handler, retried a bounded number of times for any failure (then the DLQ has the record)."""
        async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_attempts), reraise=True,
                                           wait=wait_exponential(multiplier=self.retry_wait, max=5)):
            with attempt:
                return await self.record_handler(value, record)
        raise AssertionError("unreachable")  # the last attempt's failure is raised (reraise)

    async def dead_letter(self, record: ConsumerRecord, error: BaseException) -> None:
        await dead_letter(self.publisher, record, error, self.group_id)
        CONSUMED.labels(record.topic, self.group_id, "dead_lettered").inc()
