"""Backtest: runs the service's detector over `timestamp,value` CSV files and writes
`timestamp,value,anomaly_score,is_anomaly` (is_anomaly = the detector raised a trigger at that point).

    python -m anomaly.backtest IN OUT [--labels labels.json] [--split split.json] [--part tuning|held_out|all]
                               [--config JSON] [--fallback-only] [--workers N]

IN is a CSV file or a folder walked recursively (outputs keep each file's relative path under OUT). The points go
through `MetricDetector` as the service feeds them, with the configuration `ANOMALY_DETECTOR` gives the service
(`--config` overrides it); a training request is trained inline and offered at once, and the detector installs
the model at the point the service would (`install_after` points after the request, whatever the training time),
so the alerts are the ones `python -m anomaly` raises on the same series (tests/test_service.py proves it).

With --labels, prints the NAB score of the output under the standard, reward-low-FP and reward-low-FN profiles;
with a split file (--split; by default anomaly/nab_split.json when the labels name exactly its files), also the
scores of its tuning and held-out parts. --part limits the run to one part: settings are chosen on `tuning` only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import nab
from .detector import DetectorConfig, MetricDetector, model_version

BATCH = 64  # points per feed; the decisions do not depend on it
SPLIT = Path(__file__).with_name("nab_split.json")


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
                moment = moment.replace(tzinfo=UTC)
            points.append((int(moment.timestamp() * 1000), float(row["value"])))
    return stamps, points


def default_trainer(fallback_only: bool) -> Callable | None:
    if fallback_only:
        return None
    from .model import train  # torch only when models are wanted
    return train


def run_series(points: list[tuple[int, float]], config: DetectorConfig, trainer: Callable | None, key: str,
               metric: str = "value", contexts: list | None = None) -> tuple[list, float, int]:
    """(scored points, training seconds, trainings) of one series through the detector as the service runs it."""
    detector = MetricDetector(config, trains=trainer is not None)
    contexts = contexts if contexts is not None else list(range(len(points)))
    scored, train_seconds, trainings = [], 0.0, 0
    for start in range(0, len(points), BATCH):
        scored += detector.feed_many(points[start:start + BATCH], contexts[start:start + BATCH])
        while (request := detector.take_request()) is not None:
            assert trainer is not None  # a detector that does not train requests no model
            began = time.perf_counter()
            model = trainer(request.values, config, model_version(key, metric, request.span[1]))
            train_seconds += time.perf_counter() - began
            trainings += 1
            scored += detector.offer(model)
    return scored, train_seconds, trainings


def run_file(source: Path, target: Path, name: str, config: DetectorConfig, fallback_only: bool) -> FileResult:
    stamps, points = read_series(source)
    scored, train_seconds, trainings = run_series(points, config, default_trainer(fallback_only), name,
                                                  contexts=stamps)
    rows, alerts = [], 0
    for s in scored:
        hit = s.decision is not None and s.decision.action == "trigger"
        alerts += hit
        rows.append((s.context, s.value, round(s.score / s.threshold, 6), int(hit)))
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "value", "anomaly_score", "is_anomaly"])
        writer.writerows(rows)
    return FileResult(name, len(points), alerts, train_seconds, trainings)


def run(source: Path, out: Path, config: DetectorConfig = DetectorConfig(), fallback_only: bool = False,
        workers: int = 1, only: set[str] | None = None) -> list[FileResult]:
    if source.is_dir():
        jobs = [(p, out / p.relative_to(source), p.relative_to(source).as_posix())
                for p in sorted(source.rglob("*.csv"))]
    else:
        jobs = [(source, out / source.name, source.name)]
    if only is not None:
        jobs = [j for j in jobs if j[2] in only]
    if workers <= 1:
        return [run_file(s, t, n, config, fallback_only) for s, t, n in jobs]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(run_file, s, t, n, config, fallback_only) for s, t, n in jobs]
        return [f.result() for f in futures]


def scores(out: Path, labels: dict[str, list]) -> dict[str, float]:
    """NAB score of the files of `labels` found in `out`, under each profile."""
    files = nab.read_results(out, labels)
    return {name: round(nab.score_corpus(files, labels, profile).score, 2) for name, profile in nab.PROFILES.items()}


def service_config(overrides: str | None = None) -> DetectorConfig:
    """The service's detector configuration (ANOMALY_DETECTOR), with `overrides` (JSON) applied on top."""
    config = replace(DetectorConfig(), **json.loads(os.environ.get("ANOMALY_DETECTOR") or "{}"))
    return replace(config, **json.loads(overrides)) if overrides else config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="CSV file or folder of CSV files (timestamp,value)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--labels", type=Path, help="NAB labels.json: print the NAB scores of the output")
    parser.add_argument("--split", type=Path, help="JSON with the 'tuning' and 'held_out' file lists")
    parser.add_argument("--part", choices=("tuning", "held_out", "all"), default="all",
                        help="run only this part of the split")
    parser.add_argument("--config", help="JSON overriding detector settings (as ANOMALY_DETECTOR)")
    parser.add_argument("--fallback-only", action="store_true", help="never train models (statistical fallback)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"error: {args.source} does not exist", file=sys.stderr)
        return 2
    try:
        config = service_config(args.config)
        labels = json.loads(args.labels.read_text()) if args.labels else None
        split_path = args.split or (SPLIT if labels is not None and set(labels) == set(
            json.loads(SPLIT.read_text())["tuning"] + json.loads(SPLIT.read_text())["held_out"]) else None)
        split = json.loads(split_path.read_text()) if split_path else None
        if args.part != "all" and split is None:
            raise ValueError("--part needs a split (--split, or labels of exactly the files of nab_split.json)")
        only = set(split[args.part]) if split is not None and args.part != "all" else None
        began = time.perf_counter()
        results = run(args.source, args.out, config, args.fallback_only, args.workers, only)
        summary: dict[str, Any] = {
            "files": len(results), "points": sum(r.points for r in results),
            "alerts": sum(r.alerts for r in results), "trainings": sum(r.trainings for r in results),
            "train_seconds": round(sum(r.train_seconds for r in results), 2),
            "seconds": round(time.perf_counter() - began, 1)}
        if labels is not None:
            done = {r.name for r in results}
            summary["nab"] = scores(args.out, {n: w for n, w in labels.items() if n in done})
            if split is not None:
                for part in ("tuning", "held_out"):
                    if set(split[part]) <= done:
                        summary[f"nab_{part}"] = scores(args.out, {n: labels[n] for n in split[part]})
    except (OSError, ValueError, TypeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
