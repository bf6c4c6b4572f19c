"""The service: consumes enriched events on the platform's stream runtime, runs one MetricDetector per (tenant,
stream) and metric, publishes triggers and resolves to the alert topic, trains models in a worker process.

Each batch is handled in this order: score, publish the alerts, hand training requests to the pool; the runtime
then commits the alerts with the consumed offsets (one Kafka transaction under exactly_once, the default), and
only after that commit are the detectors of the touched streams saved with the last offset they reflect. A record
at or below a stream's saved offset is already in its state and is skipped. Saving after the commit is what keeps
an aborted batch from being skipped when it comes again: until it committed, PostgreSQL holds the state it started
from, and the streams it changed in memory are dropped and loaded again before the next batch. A kill between the
commit and the save leaves the saved state behind the committed offsets: the batch's points are then missing from
its streams' history (its alerts are not repeated). Alert ids are derived from the excursion, so under
at_least_once a repeated batch re-sends the same alert ids for consumers to deduplicate.

A model is installed at the point its detector fixed when it asked for it (`install_after` points later), not when
its training happens to end: a stream that reaches that point first holds its next points (saved with its state)
until the model arrives, and the model's arrival scores them. So the service raises the alerts the backtest
computes, however the events are batched and however busy the training pool is.

Failures: an undecodable record goes to the dead letter at once; a record whose processing (loading its stream,
scoring, publishing its alert) keeps failing is retried `consumer_max_attempts` times, then dead-lettered with the
shared headers, and the batch goes on. PostgreSQL being down is waited out, not dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import multiprocessing
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from platform_common import stream as runtime
from platform_common.kafka import dead_letter, ensure_topics
from platform_common.retry import until_available
from platform_common.tracing import process_span

from .detector import Decision, DetectorConfig, MetricDetector, Scored, model_version
from .settings import AnomalySettings
from .store import Store, StreamKey, StreamRow

log = logging.getLogger(__name__)
T = TypeVar("T")

POINTS = Counter("anomaly_points_scored_total", "Metric points scored", ["detector"])
ALERTS = Counter("anomaly_alerts_total", "Alerts published", ["action", "severity", "detector"])
SKIPPED = Counter("anomaly_records_skipped_total", "Records already reflected in the saved state")
RETRIES = Counter("anomaly_processing_retries_total", "Processing attempts of a record that failed and were retried",
                  ["step"])
TRAININGS = Counter("anomaly_trainings_total", "Models trained", ["reason", "outcome"])
TRAIN_SECONDS = Histogram("anomaly_training_seconds", "Training time of one stream model",
                          buckets=(0.5, 1, 2, 5, 10, 20, 60, 120))
STREAMS = Gauge("anomaly_streams", "Streams held in memory")
HELD = Gauge("anomaly_points_held", "Points waiting for the model their detector installs before them")
LATE = Counter("anomaly_late_models_total", "Models that arrived after their install point (their stream waited)")
ALERT_NAMESPACE = uuid.UUID("5f1d8a52-8c1e-4f0e-9a57-3b9a0c2d7e11")
DEFAULT_TENANT = "default"  # the tenant of events that carry none (the enriched schema's default)


def alert_id(dedup_key: str, action: str) -> str:
    """The same id whenever the excursion's alert is raised again (a repeated batch, a replay)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{dedup_key}:{action}"))


def detector_config(settings: AnomalySettings) -> DetectorConfig:
    return replace(DetectorConfig(), **json.loads(settings.anomaly_detector))


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _context(msg: ConsumerRecord, value: dict) -> dict:
    """What publishing a point's alert, or dead-lettering its record, needs later: JSON-able, since a point held
    for its model is saved with the stream's state."""
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
            "key": msg.key.decode(errors="replace") if isinstance(msg.key, bytes) else msg.key,
            "value": _b64(msg.value), "headers": [[k, _b64(v)] for k, v in msg.headers or ()],
            "event_id": value.get("event_id", ""), "source": value.get("source", "")}


def _record(ctx: dict) -> SimpleNamespace:
    """The consumed record back from a context, as the shared dead-letter writer takes it."""
    return SimpleNamespace(topic=ctx["topic"], partition=ctx["partition"], offset=ctx["offset"], key=ctx["key"],
                           value=_unb64(ctx["value"]), headers=[(k, _unb64(v)) for k, v in ctx["headers"]])


def _traceparent(ctx: dict) -> str | None:
    return next((base64.b64decode(v).decode() for k, v in ctx["headers"] if k == "traceparent"), None)


def stream_key(value: dict) -> StreamKey:
    return (value.get("tenant") or DEFAULT_TENANT, value["stream_id"])


@dataclass
class StreamState:
    partition: int = -1
    last_offset: int = -1
    detectors: dict[str, MetricDetector] = field(default_factory=dict)


class AnomalyService:
    def __init__(self, settings: AnomalySettings):
        s = self.settings = settings
        self.config = detector_config(settings)
        self.streams: dict[StreamKey, StreamState] = {}
        # streams changed by the batch (or model install) in flight: saved once it committed, dropped if it did not
        self.uncommitted: set[StreamKey] = set()
        self.reload: set[StreamKey] = set()  # streams whose model install failed: loaded again, so they retrain
        self.store: Store | None = None
        self.pool: ProcessPoolExecutor | None = None
        self.training: dict[tuple[StreamKey, str], asyncio.Future] = {}  # until its model is being installed
        self.trainers: set[asyncio.Future] = set()  # until it is installed: shutdown waits for an install
        group, guarantee = s.anomaly_app_id, s.anomaly_processing_guarantee
        self.publisher = runtime.stream_publisher(s, guarantee, group, s.anomaly_instance_id)
        self.consumer = runtime.Stream(
            s, [s.anomaly_source_topic], group, self.publisher, self.handle, guarantee=guarantee,
            batch_size=s.anomaly_batch_size, linger_ms=int(s.anomaly_batch_seconds * 1000),
            after_commit=self._save_committed, on_assigned=self._resume,
            session_timeout_ms=int(s.anomaly_session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, s.anomaly_session_timeout_s / 3) * 1000))

    async def start(self) -> None:
        s = self.settings
        await ensure_topics(s, [s.anomaly_source_topic, s.anomaly_alert_topic])
        self.store = await Store.connect(s.database_url, s.anomaly_db_schema)
        # spawn: a forked child would inherit the loop's threads and sockets
        self.pool = ProcessPoolExecutor(s.anomaly_train_workers, mp_context=multiprocessing.get_context("spawn"))
        await self.publisher.start()  # with a transactional id: fences an earlier process with the same id
        await self.consumer.start()

    async def run(self) -> None:
        await self.consumer.run()

    async def stop(self) -> None:
        """After `run` was cancelled: a model install in flight is aborted (its stream trains again after a
        restart) or, past its commit, finishes saving its stream."""
        for trainer in self.trainers:
            trainer.cancel()
        await asyncio.gather(*self.trainers, return_exceptions=True)
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
        await self.consumer.stop()
        await self.publisher.stop()
        if self.store:
            await self.store.close()

    @property
    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the service is not started")
        return self.store

    async def _attempts(self, call: Callable[[], Awaitable[T]], step: str) -> T:
        """`call()` with the platform's bounded retries (PostgreSQL down is waited out inside, not counted)."""
        def retried(_state) -> None:
            RETRIES.labels(step).inc()

        async for attempt in AsyncRetrying(stop=stop_after_attempt(self.settings.consumer_max_attempts),
                                           wait=wait_exponential(multiplier=0.1, max=2), reraise=True,
                                           before_sleep=retried):
            with attempt:
                return await until_available(call, "PostgreSQL")
        raise AssertionError("unreachable")

    async def _dead_letter(self, record, error: BaseException) -> None:
        await dead_letter(self.publisher, record, error, self.settings.anomaly_app_id)

    # --- state ---------------------------------------------------------------------------------------------

    async def stream(self, key: StreamKey) -> StreamState:
        if key in self.streams:
            return self.streams[key]
        stream = StreamState()
        row = await self._store.load_stream(key)
        if row is not None:
            stream.partition, stream.last_offset = row.partition, row.last_offset
            for metric, snapshot in row.detectors.items():
                version = snapshot["model_version"]
                model = await self._store.load_model(version) if version else None
                stream.detectors[metric] = MetricDetector.restore(snapshot, self.config, model)
        self.streams[key] = stream
        STREAMS.set(len(self.streams))
        # a training that was running when the service stopped starts again on the same data (its points may be
        # held waiting for it)
        self._start_trainings({key: stream})
        return stream

    async def _save_committed(self) -> None:
        """The runtime's after-commit step: the changed streams' state now matches what Kafka committed."""
        streams = {key: self.streams[key] for key in self.uncommitted if key in self.streams}
        if streams:
            rows = {key: StreamRow(st.partition, st.last_offset, {m: d.snapshot() for m, d in st.detectors.items()})
                    for key, st in streams.items()}
            await until_available(lambda: self._store.save_streams(rows), "PostgreSQL")
        self.uncommitted.clear()
        HELD.set(sum(len(d.pending) for st in self.streams.values() for d in st.detectors.values()))

    async def _resume(self, assigned: set[TopicPartition]) -> None:
        """The streams of newly assigned partitions that wait for a model train again now: a stream holding points
        for its model may get no further record to load it."""
        partitions = [tp.partition for tp in assigned if tp.topic == self.settings.anomaly_source_topic]
        for key in await until_available(lambda: self._store.streams_awaiting_models(partitions), "PostgreSQL"):
            await self.stream(key)

    def _drop_uncommitted(self) -> None:
        """Before each batch or install: streams a failed one changed load again from PostgreSQL, whose state
        matches the committed offsets (the batch comes again)."""
        for key in self.uncommitted | self.reload:
            self.streams.pop(key, None)
        self.uncommitted.clear()
        self.reload.clear()
        STREAMS.set(len(self.streams))

    # --- batches -------------------------------------------------------------------------------------------

    async def handle(self, records: list[ConsumerRecord]) -> None:
        """One batch, inside its transaction under exactly_once; its streams are saved after the commit."""
        self._drop_uncommitted()
        pending: dict[StreamKey, list] = defaultdict(list)  # stream -> [(context, value)] in order
        for msg in records:
            try:
                value = await self.publisher.serde.decode(msg.value)
            except Exception as e:  # undecodable: no retry can help
                await self._dead_letter(msg, e)
                continue
            try:
                key = await self._attempts(partial(self._accept, msg, value), "load")
            except Exception as e:
                await self._dead_letter(msg, e)
                continue
            if key is None:
                SKIPPED.inc()
                continue
            pending[key].append((_context(msg, value), value))
        for key, items in pending.items():
            await self._publish_all(key, await self._score_stream(key, items))
        # a stream whose scoring failed was reloaded: start the trainings of the object that holds its state now
        self._start_trainings({key: self.streams[key] for key in pending})

    async def _accept(self, msg: ConsumerRecord, value: dict) -> StreamKey | None:
        """The record's stream, loaded; None when its state already reflects the record."""
        key = stream_key(value)
        for name in (*key, *(value.get("metrics") or {})):
            if "\x00" in name:  # PostgreSQL text and jsonb cannot hold it
                raise ValueError(f"NUL character in tenant, stream id or metric name {name!r}")
        stream = await self.stream(key)
        if msg.partition == stream.partition and msg.offset <= stream.last_offset:
            return None
        self.uncommitted.add(key)
        stream.partition, stream.last_offset = msg.partition, msg.offset
        return key

    @staticmethod
    def _feed(stream: StreamState, items: list, config: DetectorConfig) -> list[tuple[str, Scored]]:
        series: dict[str, list[tuple[int, float, dict]]] = defaultdict(list)
        for ctx, value in items:
            occurred = _ms(value["occurred_at"])
            for metric, x in sorted((value.get("metrics") or {}).items()):
                if x is None or not math.isfinite(x):
                    continue  # a missing reading is not an anomaly of the stream
                series[metric].append((occurred, float(x), ctx))
        scored = []
        for metric, points in series.items():
            det = stream.detectors.setdefault(metric, MetricDetector(config))
            detector_name = det.detector
            done = det.feed_many([(t, x) for t, x, _ in points], [c for _, _, c in points])
            POINTS.labels(detector_name).inc(len(done))
            scored += [(metric, s) for s in done]
        return scored

    async def _score_stream(self, key: StreamKey, items: list) -> list[tuple[str, Scored]]:
        stream = self.streams[key]
        try:
            return self._feed(stream, items, self.config)
        except Exception:
            log.exception("scoring %s failed; retrying its records one by one", key)
        # the stream's state before this batch is the one saved after the last one: reload it, then isolate the
        # record that fails with bounded retries, each attempt from the state before that record
        partition, last_offset = stream.partition, stream.last_offset
        self.streams.pop(key, None)
        stream = await until_available(lambda: self.stream(key), "PostgreSQL")
        stream.partition, stream.last_offset = partition, last_offset
        scored = []
        for ctx, value in items:
            before = {m: (d.snapshot(), d.model) for m, d in stream.detectors.items()}

            async def attempt(ctx=ctx, value=value, before=before) -> list[tuple[str, Scored]]:
                try:
                    return self._feed(stream, [(ctx, value)], self.config)
                except Exception:
                    stream.detectors = {m: MetricDetector.restore(snap, self.config, model)
                                        for m, (snap, model) in before.items()}
                    raise
            try:
                scored += await self._attempts(attempt, "score")
            except Exception as e:
                await self._dead_letter(_record(ctx), e)
        return scored

    async def _publish_all(self, key: StreamKey, scored: list[tuple[str, Scored]]) -> None:
        found = [(s.context["offset"], metric, s, s.decision) for metric, s in scored if s.decision is not None]
        for _, metric, s, decision in sorted(found, key=lambda f: (f[0], f[1])):
            try:
                await self._attempts(partial(self._publish, key, s.context, metric, decision), "publish")
            except Exception as e:
                await self._dead_letter(_record(s.context), e)

    async def _publish(self, key: StreamKey, ctx: dict, metric: str, d: Decision) -> None:
        s = self.settings
        tenant, stream_id = key
        dedup_key = f"{tenant}:{stream_id}:{metric}:{d.excursion_start}"
        traceparent = _traceparent(ctx)
        alert = {
            "alert_id": alert_id(dedup_key, d.action),
            "dedup_key": dedup_key, "action": d.action, "stream_id": stream_id,
            "source": ctx["source"], "tenant": tenant, "metric": metric,
            "value": d.value, "score": d.score, "threshold": d.threshold, "severity": d.severity,
            "window_start": _dt(d.window_start), "window_end": _dt(d.window_end), "detector": d.detector,
            "model_version": d.model_version, "event_id": ctx["event_id"], "traceparent": traceparent,
            "attributes": {"excursion_start": _dt(d.excursion_start).isoformat()},
            "created_at": datetime.now(UTC),
        }
        # the alert continues the trace of the event that raised it
        headers = [("traceparent", traceparent.encode())] if traceparent else []
        with process_span(ctx["topic"], s.anomaly_app_id, headers, ctx["partition"], ctx["offset"]):
            await self.publisher.publish(s.anomaly_alert_topic, stream_id, alert, schema_of="anomalies.v1")
        ALERTS.labels(d.action, d.severity, d.detector).inc()
        log.info("%s %s %s severity=%s detector=%s", d.action, dedup_key, metric, d.severity, d.detector)

    # --- training ------------------------------------------------------------------------------------------

    def _start_trainings(self, streams: dict[StreamKey, StreamState]) -> None:
        from .model import train_serialized

        loop = asyncio.get_running_loop()
        for key, stream in streams.items():
            for metric, det in stream.detectors.items():
                if (key, metric) in self.training or (request := det.take_request()) is None:
                    continue
                version = model_version("/".join(key), metric, request.span[1])
                future = loop.run_in_executor(self.pool, train_serialized, request.values, self.config, version)
                trainer = asyncio.ensure_future(self._finish_training(key, metric, future, request))
                self.training[(key, metric)] = trainer
                self.trainers.add(trainer)
                trainer.add_done_callback(self.trainers.discard)

    async def _finish_training(self, key: StreamKey, metric: str, future, request) -> None:
        """Stores the model, then hands it to its detector, which installs it at its point: the points held for
        it are scored now, their alerts published and the stream saved, as a batch would."""
        from .model import TrainedModel

        model = None
        try:
            result = await future
            model = TrainedModel.from_bytes(result["blob"], result["version"], result["center"], result["scale"],
                                            result["error_median"], result["error_mad"], result["metadata"])
            model.calibration = result["calibration"]
            await until_available(partial(self._store.save_model, key, metric, model, request.span, request.reason),
                                  "PostgreSQL")
            TRAININGS.labels(request.reason, "ok").inc()
            TRAIN_SECONDS.observe(model.metadata["train_seconds"])
            log.info("model %s trained (%s) in %.1fs", model.version, request.reason, model.metadata["train_seconds"])
        except asyncio.CancelledError:
            raise
        except Exception:
            TRAININGS.labels(request.reason, "failed").inc()
            log.exception("training %s %s failed; the detector goes on with its current scorer", key, metric)
            model = None
        try:
            await self.consumer.outside_batch(partial(self._install, key, metric, request, model))
        except Exception:
            log.exception("installing the model of %s %s failed; the stream loads again and retrains", key, metric)
            self.training.pop((key, metric), None)
            self.reload.add(key)

    async def _install(self, key: StreamKey, metric: str, request, model) -> None:
        """Between batches, in a transaction of its own under exactly_once; the stream is saved after its commit."""
        self._drop_uncommitted()
        self.training.pop((key, metric), None)
        stream = self.streams.get(key)
        det = stream.detectors.get(metric) if stream is not None else None
        if stream is None or det is None or det.request is None or det.request.span != request.span:
            return  # the stream was reloaded since, with a request of its own
        if det.blocked:
            LATE.inc()
        self.uncommitted.add(key)
        scored = det.offer(model) if model is not None else det.abandon_request()
        POINTS.labels(det.detector).inc(len(scored))
        await self._publish_all(key, [(metric, s) for s in scored])
        self._start_trainings({key: stream})
