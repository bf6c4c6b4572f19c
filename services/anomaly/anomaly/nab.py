"""NAB scoring (Numenta Anomaly Benchmark, standard profile), as NAB's own `Sweeper` computes it.

Per file: the first 15% of rows (at most 750) are probationary and ignored. A detection inside a labelled window
scores the scaled sigmoid of its relative position (earliest detection of each window counts, so detecting at
the left edge is worth tpWeight); a window with no detection costs fnWeight; a detection outside every window
costs fpWeight times the scaled sigmoid of its distance past the previous window (full cost before any window).
The corpus score is normalised so the null detector (no detections) scores 0 and the perfect one 100.

Run `python -m anomaly.nab RESULTS_DIR LABELS_JSON` on a backtest's output folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0
    probation: float = 0.15


STANDARD = Profile()
# NAB's two other application profiles (config/profiles.json): false positives cost twice as much, or misses do
LOW_FP = Profile(fp=0.22)
LOW_FN = Profile(fn=2.0)
PROFILES = {"standard": STANDARD, "reward_low_FP_rate": LOW_FP, "reward_low_FN_rate": LOW_FN}


def scaled_sigmoid(position: float) -> float:
    """-1 is a window's left edge (0.98661), 0 its right edge (0), >= 3 far past it (-1)."""
    if position >= 3.0:
        return -1.0
    return 2 / (1 + math.exp(5 * position)) - 1.0


def probationary_length(rows: int, profile: Profile = STANDARD) -> float:
    return min(math.floor(profile.probation * rows), profile.probation * 5000)


def score_file(timestamps: list, detections: list[bool], windows: list[tuple], profile: Profile = STANDARD) -> float:
    """Raw NAB score of one file; `windows` are (start, end) timestamps that occur in `timestamps`."""
    index = {t: i for i, t in enumerate(timestamps)}
    bounds = sorted((index[a], index[b]) for a, b in windows)
    probation = probationary_length(len(timestamps), profile)
    max_tp = scaled_sigmoid(-1.0)
    # a window counts as missed unless some non-probationary detection lands in it (NAB scores only windows
    # that have at least one scorable row)
    best: dict[int, float] = {w: -profile.fn for w, (_, right) in enumerate(bounds) if right >= probation}
    fp_total = 0.0
    w = 0  # next window not yet passed
    prev_right: int | None = None  # the last window passed, and its width
    prev_width = 0
    for i, detected in enumerate(detections):
        while w < len(bounds) and i > bounds[w][1]:
            prev_right, prev_width = bounds[w][1], bounds[w][1] - bounds[w][0] + 1
            w += 1
        if not detected or i < probation:
            continue
        if w < len(bounds) and bounds[w][0] <= i:
            left, right = bounds[w]
            width = right - left + 1
            best[w] = max(best[w], scaled_sigmoid(-(right - i + 1) / width) * profile.tp / max_tp)
        else:
            position = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            fp_total += scaled_sigmoid(position) * profile.fp
    return fp_total + sum(best.values())


def perfect_detections(timestamps: list, windows: list[tuple], profile: Profile = STANDARD) -> list[bool]:
    """NAB's perfect detector: one detection at the first scorable row of each window."""
    index = {t: i for i, t in enumerate(timestamps)}
    hits = [False] * len(timestamps)
    probation = probationary_length(len(timestamps), profile)
    for a, b in windows:
        first = max(index[a], math.ceil(probation))
        if first <= index[b]:
            hits[first] = True
    return hits


@dataclass
class CorpusScore:
    score: float  # normalised, null = 0, perfect = 100
    raw: float
    null: float
    perfect: float
    files: int
    windows: int
    detections: int


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def score_corpus(files: dict[str, tuple[list, list[bool]]], labels: dict[str, list], profile: Profile = STANDARD
                 ) -> CorpusScore:
    """`files` maps each labelled relative path to (timestamps, detections)."""
    raw = null = perfect = 0.0
    windows = detections = 0
    for name, (timestamps, hits) in files.items():
        limits = [(parse_time(a), parse_time(b)) for a, b in labels[name]]
        raw += score_file(timestamps, hits, limits, profile)
        null += score_file(timestamps, [False] * len(hits), limits, profile)
        perfect += score_file(timestamps, perfect_detections(timestamps, limits, profile), limits, profile)
        windows += len(limits)
        detections += sum(hits)
    normalised = 100 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return CorpusScore(normalised, raw, null, perfect, len(files), windows, detections)


def read_results(results_dir: Path, labels: dict[str, list]) -> dict[str, tuple[list, list[bool]]]:
    files = {}
    for name in labels:
        path = results_dir / name
        if not path.exists():
            raise FileNotFoundError(f"no backtest output for {name} in {results_dir}")
        with path.open() as f:
            rows = list(csv.DictReader(f))
        files[name] = ([parse_time(r["timestamp"]) for r in rows],
                       [r["is_anomaly"] in ("1", "True", "true") for r in rows])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NAB standard-profile score of a backtest output folder")
    parser.add_argument("results", type=Path, help="folder written by the backtest")
    parser.add_argument("labels", type=Path, help="NAB labels.json (combined windows)")
    args = parser.parse_args(argv)
    try:
        labels = json.loads(args.labels.read_text())
        result = score_corpus(read_results(args.results, labels), labels)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
