"""Backtest: runs the service's detector over `timestamp,value` CSV files and writes
`timestamp,value,anomaly_score,is_anomaly` (is_anomaly = the detector raised a trigger at that point).

    python -m anomaly.backtest IN OUT [--labels labels.json] [--fallback-only]

IN is a CSV file or a folder walked recursively (outputs keep each file's relative path under OUT). Points are fed
in batches as the service receives them; training runs inline where the service would hand it to its pool, so the
alerts are the ones the service raises. With --labels, prints the NAB standard-profile score of the output.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .detector import DetectorConfig, MetricDetector
from . import nab

BATCH = 64


@dataclass
class FileResult:
    name: str
    points: int
    alerts: int
    train_seconds: float
    trainings: int


def read_series(path: Path) -> tuple[list[str], list[tuple[int, float]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header with timestamp,value")
        stamps, points = [], []
        for row in reader:
            stamps.append(row["timestamp"])
            moment = datetime.fromisoformat(row["timestamp"].strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            points.append((int(moment.timestamp() * 1000), float(row["value"])))
    return stamps, points


def default_trainer(fallback_only: bool) -> Callable | None:
    if fallback_only:
        return None
    from .model import train  # torch only when models are wanted
    return train


def run_file(source: Path, target: Path, name: str, config: DetectorConfig, fallback_only: bool) -> FileResult:
    trainer = default_trainer(fallback_only)
    stamps, points = read_series(source)
    detector = MetricDetector(config)
    rows, alerts, train_seconds, trainings = [], 0, 0.0, 0
    for start in range(0, len(points), BATCH):
        batch = points[start:start + BATCH]
        for stamp, scored in zip(stamps[start:start + BATCH], detector.feed_many(batch)):
            hit = scored.decision is not None and scored.decision.action == "trigger"
            alerts += hit
            rows.append((stamp, scored.value, round(scored.score / scored.threshold, 6), int(hit)))
        if detector.wants_training():
            values, span = detector.training_data()
            if trainer is not None:
                began = time.perf_counter()
                detector.install(trainer(values, config, f"{name}@{span[1]}"))
                train_seconds += time.perf_counter() - began
                trainings += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "value", "anomaly_score", "is_anomaly"])
        writer.writerows(rows)
    return FileResult(name, len(points), alerts, train_seconds, trainings)


def run(source: Path, out: Path, config: DetectorConfig = DetectorConfig(), fallback_only: bool = False,
        workers: int = 1) -> list[FileResult]:
    if source.is_dir():
        jobs = [(p, out / p.relative_to(source), p.relative_to(source).as_posix())
                for p in sorted(source.rglob("*.csv"))]
    else:
        jobs = [(source, out / source.name, source.name)]
    if workers <= 1:
        return [run_file(s, t, n, config, fallback_only) for s, t, n in jobs]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(run_file, s, t, n, config, fallback_only) for s, t, n in jobs]
        return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="CSV file or folder of CSV files (timestamp,value)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--labels", type=Path, help="NAB labels.json: print the NAB score of the output")
    parser.add_argument("--fallback-only", action="store_true", help="never train models (statistical fallback)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"error: {args.source} does not exist", file=sys.stderr)
        return 2
    try:
        results = run(args.source, args.out, fallback_only=args.fallback_only, workers=args.workers)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"files": len(results), "points": sum(r.points for r in results),
               "alerts": sum(r.alerts for r in results), "trainings": sum(r.trainings for r in results),
               "train_seconds": round(sum(r.train_seconds for r in results), 2)}
    if args.labels:
        labels = json.loads(args.labels.read_text())
        score = nab.score_corpus(nab.read_results(args.out, labels), labels)
        summary["nab_score"] = round(score.score, 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
