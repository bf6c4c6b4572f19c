"""Benchmark of the anomaly detector: points scored per second per core (LSTM autoencoder and statistical
fallback), training time of one stream model, and the NAB score of the backtest over ../shared/datasets/nab-dev.

    .venv/bin/python services/anomaly/bench.py

Needs no running stack: it measures the detector code the service runs. Prints one markdown section.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anomaly import backtest, nab
from anomaly.detector import DetectorConfig, MetricDetector
from anomaly.model import train

REPO = Path(__file__).resolve().parents[2]
NAB_DIR = REPO.parent / "shared" / "datasets" / "nab-dev"
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


def main() -> int:
    config = DetectorConfig()
    history = series(config.history, 1)
    warm_times = [train(series(config.warmup, s), config, "bench").metadata["train_seconds"] for s in range(3)]
    full_times = [train(series(config.history, s), config, "bench").metadata["train_seconds"] for s in range(3)]
    model = train(history, config, "bench")

    lstm = MetricDetector(config)
    lstm.feed_many([(60_000 * i, float(v)) for i, v in enumerate(history)])
    lstm.install(model)
    lstm_rate = scoring_rate(lstm, series(20_000, 2))
    fallback_rate = scoring_rate(MetricDetector(config), series(20_000, 2))

    labels = json.loads((NAB_DIR / "labels.json").read_text())
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        results = backtest.run(NAB_DIR / "data", Path(out), config, workers=2)
        seconds = time.perf_counter() - began
        score = nab.score_corpus(nab.read_results(Path(out), labels), labels)
    trainings = sum(r.trainings for r in results)

    print("## anomaly\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| points scored per second per core, LSTM autoencoder (batches of {BATCH}) | {lstm_rate:,.0f} | >= 5,000 |")
    print(f"| points scored per second per core, statistical fallback | {fallback_rate:,.0f} | |")
    print(f"| training time per stream model, warm-up ({config.warmup} points), median of 3 "
          f"| {statistics.median(warm_times):.2f} s | |")
    print(f"| training time per stream model, full history ({config.history} points), median of 3 "
          f"| {statistics.median(full_times):.2f} s | |")
    print(f"| NAB score, standard profile, nab-dev ({score.files} files, {score.windows} windows) "
          f"| {score.score:.1f} | >= 50 |")
    print(f"| backtest: points, alerts, models trained, wall time (2 processes) "
          f"| {sum(r.points for r in results):,}, {score.detections}, {trainings}, {seconds:.0f} s | |")
    print("\nOne thread per process (torch.set_num_threads(1)); one detector configuration for every NAB file.\n")
    print("Command: `.venv/bin/python services/anomaly/bench.py`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
