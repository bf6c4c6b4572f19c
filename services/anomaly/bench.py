"""Benchmark of the anomaly detector: points scored per second per core (LSTM autoencoder and statistical
fallback), training time of one stream model, the NAB score of the backtest over ../shared/datasets/nab-dev, and
events per second through the service itself (`python -m anomaly`) from a backlog on Kafka.

    .venv/bin/python services/anomaly/bench.py

The service figure needs the running stack (`make up`). Prints one markdown section.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from anomaly import backtest, nab
from anomaly.detector import DetectorConfig, MetricDetector
from anomaly.model import train
from anomaly.settings import AnomalySettings
from anomaly.testing import AnomalyProcess, cleanup, enriched_event
from platform_common.kafka import ENRICHED, Publisher, ensure_topics
from platform_common.testing import consumer_lag, free_port

REPO = Path(__file__).resolve().parents[2]
NAB_DIR = REPO.parent / "shared" / "datasets" / "nab-dev"
SERVICE_STREAMS, SERVICE_POINTS = 50, 1500
BATCH = 200  # points of one stream per model call (a service batch holds fewer per stream when many streams share it)


def series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + 5 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.5, n)


def scoring_rate(detector: MetricDetector, values: np.ndarray) -> float:
    """Points per CPU-second (process time: what one core does, whatever else runs on the machine)."""
    points = [(60_000 * i, float(v)) for i, v in enumerate(values)]
    began = time.process_time()
    for start in range(0, len(points), BATCH):
        detector.feed_many(points[start:start + BATCH])
    return len(points) / (time.process_time() - began)


async def prefill(settings: AnomalySettings, streams: int, points: int) -> None:
    """`points` enriched events per stream, interleaved as live streams arrive, each stream in order."""
    await ensure_topics(settings, [settings.anomaly_source_topic, settings.anomaly_alert_topic])
    publisher = Publisher(settings, linger_ms=20)
    await publisher.start()
    try:
        values, sent = series(points, 3), []
        for i in range(points):
            for k in range(streams):
                payload = await publisher.serde.encode(settings.anomaly_source_topic,
                                                       enriched_event(f"bench-{k}", i, float(values[i])), ENRICHED)
                # straight to the one idempotent producer: it keeps each stream's order without waiting for acks
                sent.append(await publisher.producer.send(settings.anomaly_source_topic, payload,
                                                          key=f"bench-{k}".encode()))
        await asyncio.gather(*sent)
    finally:
        await publisher.stop()


def service_rate(workdir: Path) -> tuple[int, float]:
    """(events, events/s) of one service process catching up with SERVICE_STREAMS x SERVICE_POINTS events, from
    the moment it is ready to the moment its consumer group has no lag: decoding, scoring, training in its worker
    process, alerts and the state saved to PostgreSQL after every batch, as in production."""
    run = uuid.uuid4().hex[:8]
    settings = AnomalySettings(anomaly_source_topic=f"bench.anomaly.in.{run}",
                               anomaly_alert_topic=f"bench.anomaly.out.{run}", anomaly_app_id=f"anomaly-bench-{run}",
                               anomaly_db_schema=f"anomaly_bench_{run}", anomaly_port=free_port())
    events = SERVICE_STREAMS * SERVICE_POINTS
    service = AnomalyProcess(settings, workdir)
    try:
        asyncio.run(prefill(settings, SERVICE_STREAMS, SERVICE_POINTS))
        service.start()
        started = time.monotonic()
        while consumer_lag(settings, settings.anomaly_app_id, settings.anomaly_source_topic) > 0:
            if time.monotonic() - started > 600:
                raise TimeoutError("the service did not catch up within 10 minutes")
            time.sleep(0.5)
        return events, events / (time.monotonic() - started)
    finally:
        service.stop()
        asyncio.run(cleanup(settings))


def main() -> int:
    config = DetectorConfig()
    history = series(config.history, 1)
    warm_times = [train(series(config.warmup, s), config, "bench").metadata["train_seconds"] for s in range(3)]
    full_times = [train(series(config.history, s), config, "bench").metadata["train_seconds"] for s in range(3)]
    model = train(history, config, "bench")

    lstm = MetricDetector(config, trains=False)
    lstm.feed_many([(60_000 * i, float(v)) for i, v in enumerate(history)])
    lstm.install(model)
    lstm_rate = scoring_rate(lstm, series(20_000, 2))
    fallback_rate = scoring_rate(MetricDetector(config, trains=False), series(20_000, 2))

    labels = json.loads((NAB_DIR / "labels.json").read_text())
    split = json.loads(backtest.SPLIT.read_text())
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        # one process: the backtest is CPU-bound and the machine's two cores are shared
        results = backtest.run(NAB_DIR / "data", Path(out), config, workers=1)
        seconds = time.perf_counter() - began
        parts = {part: backtest.scores(Path(out), {n: labels[n] for n in split[part]})
                 for part in ("tuning", "held_out")}
        score = nab.score_corpus(nab.read_results(Path(out), labels), labels)
    trainings = sum(r.trainings for r in results)
    with tempfile.TemporaryDirectory() as workdir:
        service_events, service_eps = service_rate(Path(workdir))

    print("## anomaly\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| points scored per second per core, LSTM autoencoder (batches of {BATCH}) | {lstm_rate:,.0f} | >= 5,000 |")
    print(f"| points scored per second per core, statistical fallback | {fallback_rate:,.0f} | |")
    print(f"| training time per stream model, warm-up ({config.warmup} points), median of 3 "
          f"| {statistics.median(warm_times):.2f} s | |")
    print(f"| training time per stream model, full history ({config.history} points), median of 3 "
          f"| {statistics.median(full_times):.2f} s | |")
    for part, target in (("tuning", ""), ("held_out", ">= 65")):
        named = {"tuning": "tuning part", "held_out": "held-out part"}[part]
        print(f"| NAB score, standard / reward-low-FP / reward-low-FN, nab-dev {named} ({len(split[part])} files) "
              f"| {' / '.join(f'{v:.1f}' for v in parts[part].values())} | {target} |")
    print(f"| NAB score, standard profile, all of nab-dev ({score.files} files, {score.windows} windows) "
          f"| {score.score:.1f} | |")
    print(f"| backtest: points, alerts, models trained, wall time (1 process) "
          f"| {sum(r.points for r in results):,}, {score.detections}, {trainings}, {seconds:.0f} s | |")
    print(f"| events/s through one service process from a backlog ({SERVICE_STREAMS} streams x {SERVICE_POINTS} "
          f"points, {service_events:,} events, Kafka + PostgreSQL state; 1-min load average {os.getloadavg()[0]:.1f}) "
          f"| {service_eps:,.0f} | |")
    # the NAB score moves with torch's numerics (training is seeded, not bit-identical across versions)
    print(f"\nOne thread per process (torch.set_num_threads(1)), torch {torch.__version__}; one detector configuration "
          "for every NAB file.\n")
    print("Command: `.venv/bin/python services/anomaly/bench.py`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
