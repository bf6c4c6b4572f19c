"""The Faust application: consumes enriched events keyed by stream id, runs one MetricDetector per stream and
metric, publishes triggers and resolves to the alert topic, trains models in a worker process.

Each batch is handled in this order: install models that finished training, score, publish the alerts (acks=all),
save the detectors of the touched streams with the last offset they reflect, then let Faust ack the events. A
record at or below a stream's saved offset is already in its state and is skipped, so a restart (or a re-delivered
batch) neither forgets a stream nor raises its alerts again; alert ids are derived from the excursion, so even a
crash between publishing and saving re-sends the same alert id for consumers to deduplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing
import uuid
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import faust
from prometheus_client import Counter, Gauge, Histogram

from platform_common.kafka import Publisher, dlq, ensure_topics
from platform_common.ops import kafka_check, ops_app, postgres_check, registry_check, serve
from platform_common.retry import until_available
from platform_common.tracing import process_span

from .detector import Decision, DetectorConfig, MetricDetector
from .settings import AnomalySettings
from .store import Store, StreamRow

log = logging.getLogger(__name__)

POINTS = Counter("anomaly_points_scored_total", "Metric points scored", ["detector"])
ALERTS = Counter("anomaly_alerts_total", "Alerts published", ["action", "severity", "detector"])
SKIPPED = Counter("anomaly_records_skipped_total", "Records already reflected in the saved state")
TRAININGS = Counter("anomaly_trainings_total", "Models trained", ["reason", "outcome"])
TRAIN_SECONDS = Histogram("anomaly_training_seconds", "Training time of one stream model",
                          buckets=(0.5, 1, 2, 5, 10, 20, 60, 120))
STREAMS = Gauge("anomaly_streams", "Streams held in memory")
ALERT_NAMESPACE = uuid.UUID("5f1d8a52-8c1e-4f0e-9a57-3b9a0c2d7e11")


def detector_config(settings: AnomalySettings) -> DetectorConfig:
    return replace(DetectorConfig(), **json.loads(settings.anomaly_detector))


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _header(headers: Any, name: str) -> str | None:
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for key, value in items:
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


@dataclass
class Stream:
    partition: int = -1
    last_offset: int = -1
    detectors: dict[str, MetricDetector] = field(default_factory=dict)


class AnomalyService:
    def __init__(self, settings: AnomalySettings):
        self.settings = settings
        self.config = detector_config(settings)
        self.streams: dict[str, Stream] = {}
        self.store: Store | None = None
        self.publisher: Publisher | None = None
        self.pool: ProcessPoolExecutor | None = None
        self.training: dict[tuple[str, str], asyncio.Future] = {}
        self._started = asyncio.Lock()
        self._busy = asyncio.Lock()  # held while a batch is in flight, so shutdown waits for it

    async def start(self) -> None:
        async with self._started:
            if self.store is not None:
                return
            s = self.settings
            await ensure_topics(s, [s.anomaly_source_topic, s.anomaly_alert_topic])
            self.store = await Store.connect(s.database_url, s.anomaly_db_schema)
            self.publisher = Publisher(s)
            await self.publisher.start()
            # spawn: a forked child would inherit the loop's threads and sockets
            self.pool = ProcessPoolExecutor(s.anomaly_train_workers, mp_context=multiprocessing.get_context("spawn"))

    async def stop(self) -> None:
        async with self._busy:
            for future in self.training.values():
                future.cancel()
            if self.pool:
                self.pool.shutdown(wait=False, cancel_futures=True)
            if self.publisher:
                await self.publisher.stop()
            if self.store:
                await self.store.close()

    # --- state ---------------------------------------------------------------------------------------------

    async def stream(self, stream_id: str) -> Stream:
        if stream_id in self.streams:
            return self.streams[stream_id]
        stream = Stream()
        # PostgreSQL down: the batch waits here (nothing is committed), rather than crash the agent
        row = await until_available(lambda: self.store.load_stream(stream_id), "PostgreSQL")
        if row is not None:
            stream.partition, stream.last_offset = row.partition, row.last_offset
            for metric, snapshot in row.detectors.items():
                version = snapshot["model_version"]
                model = await until_available(lambda: self.store.load_model(version), "PostgreSQL") if version else None
                det = MetricDetector.restore(snapshot, self.config, model)
                # a training that was running when the service stopped is asked for again
                if model is None and det.state.seen >= self.config.warmup and not det.wants_training():
                    det.request_training("warmup")
                stream.detectors[metric] = det
        self.streams[stream_id] = stream
        STREAMS.set(len(self.streams))
        return stream

    # --- batches -------------------------------------------------------------------------------------------

    async def handle(self, events: list) -> None:
        async with self._busy:
            self._install_trained()
            touched: dict[str, Stream] = {}
            pending: dict[str, list] = defaultdict(list)  # stream -> [(event message, value)] in order
            for event in events:
                msg = event.message
                try:
                    value = await self.publisher.serde.decode(msg.value)
                    stream_id = value["stream_id"]
                except Exception as e:  # undecodable: no retry can help
                    await self._dead_letter(msg, e)
                    continue
                stream = await self.stream(stream_id)
                if msg.partition == stream.partition and msg.offset <= stream.last_offset:
                    SKIPPED.inc()
                    continue
                pending[stream_id].append((msg, value))
                stream.partition, stream.last_offset = msg.partition, msg.offset
                touched[stream_id] = stream
            for stream_id, items in pending.items():
                await self._score_stream(stream_id, touched[stream_id], items)
            self._start_trainings(touched)
            if touched:
                rows = {sid: StreamRow(st.partition, st.last_offset, {m: d.snapshot() for m, d in st.detectors.items()})
                        for sid, st in touched.items()}
                await until_available(lambda: self.store.save_streams(rows), "PostgreSQL")

    async def _score_stream(self, stream_id: str, stream: Stream, items: list) -> None:
        series: dict[str, list[tuple[int, float, int]]] = defaultdict(list)  # metric -> (ts, value, item index)
        for i, (msg, value) in enumerate(items):
            occurred = _ms(value["occurred_at"])
            for metric, x in sorted((value.get("metrics") or {}).items()):
                if x is None or not math.isfinite(x):
                    continue  # a missing reading is not an anomaly of the stream
                series[metric].append((occurred, float(x), i))
        found: list[tuple[int, str, Decision]] = []
        for metric, points in series.items():
            det = stream.detectors.setdefault(metric, MetricDetector(self.config))
            detector_name = det.detector
            for (_, _, i), scored in zip(points, det.feed_many([(t, x) for t, x, _ in points])):
                if scored.decision is not None:
                    found.append((i, metric, scored.decision))
            POINTS.labels(detector_name).inc(len(points))
        for i, metric, decision in sorted(found, key=lambda f: (f[0], f[1])):
            msg, value = items[i]
            await self._publish(msg, value, metric, decision)

    async def _publish(self, msg, value: dict, metric: str, d: Decision) -> None:
        s = self.settings
        dedup_key = f"{value['stream_id']}:{metric}:{d.excursion_start}"
        traceparent = _header(msg.headers, "traceparent")
        alert = {
            "alert_id": str(uuid.uuid5(ALERT_NAMESPACE, f"{dedup_key}:{d.action}")),
            "dedup_key": dedup_key, "action": d.action, "stream_id": value["stream_id"],
            "source": value.get("source", ""), "tenant": value.get("tenant", "default"), "metric": metric,
            "value": d.value, "score": d.score, "threshold": d.threshold, "severity": d.severity,
            "window_start": _dt(d.window_start), "window_end": _dt(d.window_end), "detector": d.detector,
            "model_version": d.model_version, "event_id": value.get("event_id", ""), "traceparent": traceparent,
            "attributes": {"excursion_start": _dt(d.excursion_start).isoformat()},
            "created_at": datetime.now(timezone.utc),
        }
        # the alert continues the trace of the event that raised it
        with process_span(msg.topic, s.anomaly_app_id, list(msg.headers or ()), msg.partition, msg.offset):
            await self.publisher.publish(s.anomaly_alert_topic, value["stream_id"], alert,
                                         schema_of="anomalies.v1")
        ALERTS.labels(d.action, d.severity, d.detector).inc()
        log.info("%s %s %s severity=%s detector=%s", d.action, dedup_key, metric, d.severity, d.detector)

    async def _dead_letter(self, msg, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"[:1000]
        log.warning("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
        headers = [*(list(msg.headers or ())),
                   ("dlq.reason", reason.encode()), ("dlq.source.topic", msg.topic.encode()),
                   ("dlq.source.partition", str(msg.partition).encode()),
                   ("dlq.source.offset", str(msg.offset).encode()),
                   ("dlq.consumer.group", self.settings.anomaly_app_id.encode())]
        key = msg.key.decode(errors="replace") if isinstance(msg.key, bytes) else msg.key
        await self.publisher.send(dlq(msg.topic), key, msg.value, headers)

    # --- training ------------------------------------------------------------------------------------------

    def _start_trainings(self, streams: dict[str, Stream]) -> None:
        from .model import train_serialized

        loop = asyncio.get_running_loop()
        for stream_id, stream in streams.items():
            for metric, det in stream.detectors.items():
                reason = det.wants_training()
                if not reason or (stream_id, metric) in self.training:
                    continue
                values, span = det.training_data()
                version = f"lstm:{stream_id}:{metric}:{span[1]}"
                future = loop.run_in_executor(self.pool, train_serialized, values, self.config, version)
                self.training[(stream_id, metric)] = asyncio.ensure_future(
                    self._finish_training(stream_id, metric, future, span, reason))

    async def _finish_training(self, stream_id: str, metric: str, future, span: list[int], reason: str):
        from .model import TrainedModel

        try:
            result = await future
        except Exception:
            TRAININGS.labels(reason, "failed").inc()
            log.exception("training %s %s failed", stream_id, metric)
            return None
        model = TrainedModel.from_bytes(result["blob"], result["version"], result["center"], result["scale"],
                                        result["error_median"], result["error_mad"], result["metadata"])
        model.calibration = result["calibration"]
        await until_available(lambda: self.store.save_model(stream_id, metric, model, span, reason), "PostgreSQL")
        TRAININGS.labels(reason, "ok").inc()
        TRAIN_SECONDS.observe(model.metadata["train_seconds"])
        log.info("model %s trained (%s) in %.1fs", model.version, reason, model.metadata["train_seconds"])
        return model

    def _install_trained(self) -> None:
        """Installs finished models between batches, so a batch is scored by one model from start to end."""
        for key, task in list(self.training.items()):
            if not task.done():
                continue
            del self.training[key]
            model = None if task.cancelled() else task.result()
            stream = self.streams.get(key[0])
            if model is not None and stream is not None and key[1] in stream.detectors:
                stream.detectors[key[1]].install(model)


def create_app(settings: AnomalySettings) -> tuple[faust.App, AnomalyService]:
    datadir = settings.data_dir / "anomaly" / settings.anomaly_app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.anomaly_app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.kafka_partitions,
        consumer_auto_offset_reset="earliest",
    )
    service = AnomalyService(settings)
    source = app.topic(settings.anomaly_source_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def detect(stream):
        await service.start()
        async for events in stream.take_events(settings.anomaly_batch_size, within=settings.anomaly_batch_seconds):
            # shielded: a shutdown lets the batch finish, so its alerts and state are saved together
            await asyncio.shield(service.handle(events))

    @app.task
    async def ops() -> None:
        s = settings
        checks = {"kafka": kafka_check(s.kafka_bootstrap_servers), "registry": registry_check(s.schema_registry_url),
                  "postgres": postgres_check(s.database_url)}
        await serve(ops_app("anomaly", checks), s.anomaly_port)

    @app.on_before_shutdown.connect
    async def shutdown(_app, **_kwargs) -> None:
        await service.stop()

    return app, service
