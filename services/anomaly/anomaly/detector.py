"""The detector of one metric of one stream: feed points, get decisions. Plain, synchronous and deterministic,
so the Faust agent and the backtest run exactly the same code.

Scoring. Every point gets an anomaly score in "robust z" units (how many scaled MADs it is from normal):
- before the stream's first model exists, the statistical fallback (detector="fallback"): the larger of the
  deviation of the value, and of the mean of the last `fallback_short` values, from the median of the previous
  `fallback_window` values, each divided by their MAD (1.4826 * median absolute deviation);
- once a model is installed (detector="lstm-autoencoder"): the reconstruction error of the window ending at the
  point, standardised by the median and MAD of the model's validation errors.

Threshold. Calibrated dynamically: every `calibrate_every` points it becomes `threshold_margin` times the
`threshold_quantile` of the last `threshold_history` scores that stayed below it outside excursions (so anomalies,
suppressed ones included, never raise the bar), never below `threshold_floor`. Right after a model is installed the
history restarts with the new model's scores on its validation windows.

Suppression. A trigger when the score crosses the threshold (one per excursion), a resolve once the score has
stayed below `resolve_ratio * threshold` for `resolve_after` points, then `cooldown` points without a new trigger.
Severity grows with score / threshold.

Models. The detector asks for training (`wants_training`) after `warmup` points, every `retrain_every` points
after that, and when the median error of the last `drift_window` points drifts beyond `drift_ratio` times the
validation median; whoever runs it (a worker pool in the service, inline in the backtest) calls `install`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

FALLBACK = "fallback"
LSTM = "lstm-autoencoder"
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class DetectorConfig:
    window: int = 32
    history: int = 2000
    warmup: int = 200
    fallback_window: int = 200
    fallback_short: int = 5
    threshold_quantile: float = 0.999
    threshold_margin: float = 1.5
    threshold_floor: float = 3.0
    threshold_history: int = 2000
    calibrate_every: int = 50
    resolve_ratio: float = 0.7
    resolve_after: int = 10
    cooldown: int = 50
    retrain_every: int = 5000
    drift_window: int = 200
    drift_ratio: float = 3.0
    severity_tiers: tuple = ((4.0, "critical"), (2.0, "error"), (1.3, "warning"), (0.0, "info"))


class Model(Protocol):
    version: str
    error_median: float
    error_mad: float
    calibration: list[float]  # scores of the validation windows

    def errors(self, windows: np.ndarray) -> np.ndarray:
        """Reconstruction error of each row of `windows` (shape n x window)."""


@dataclass
class Decision:
    action: str  # trigger or resolve
    timestamp: int
    value: float
    score: float
    threshold: float
    severity: str
    window_start: int
    window_end: int
    detector: str
    model_version: str
    excursion_start: int  # the trigger's timestamp: with the stream and metric, the dedup key


@dataclass
class Scored:
    timestamp: int
    value: float
    score: float
    threshold: float
    decision: Decision | None = None


@dataclass
class _State:
    seen: int = 0
    threshold: float = 0.0
    since_calibration: int = 0
    since_training: int = 0
    training_reason: str = ""  # warmup, schedule or drift while a training is wanted
    excursion_start: int | None = None
    excursion_peak: float = 0.0
    below: int = 0
    cooldown_left: int = 0
    drift_flag: bool = False
    settle_left: int = 0  # points after a model install during which nothing is raised


class MetricDetector:
    def __init__(self, config: DetectorConfig = DetectorConfig()):
        self.config = config
        self.values: deque[float] = deque(maxlen=config.history)
        self.times: deque[int] = deque(maxlen=config.history)
        self.scores: deque[float] = deque(maxlen=config.threshold_history)
        self.recent_errors: deque[float] = deque(maxlen=config.drift_window)
        self.state = _State(threshold=config.threshold_floor)
        self.model: Model | None = None

    # --- models ------------------------------------------------------------------------------------------

    @property
    def detector(self) -> str:
        return LSTM if self.model is not None else FALLBACK

    @property
    def model_version(self) -> str:
        return self.model.version if self.model is not None else FALLBACK

    def wants_training(self) -> str:
        """Why a new model is wanted (warmup, schedule, drift), or "" if none is."""
        return self.state.training_reason

    def request_training(self, reason: str) -> None:
        self.state.training_reason = reason

    def training_data(self) -> tuple[np.ndarray, list[int]]:
        """The history a new model learns from, and the first and last timestamps of it; clears the request."""
        self.state.training_reason = ""
        return np.fromiter(self.values, float, len(self.values)), [self.times[0], self.times[-1]]

    def install(self, model: Model) -> None:
        """Switches scoring to `model`; scores of the previous scorer no longer calibrate the threshold."""
        self.model = model
        self.state.since_training = 0
        self.state.drift_flag = False
        self.recent_errors.clear()
        # the threshold is recalibrated at once on the new model's validation scores, not the old scorer's
        self.scores.clear()
        self.scores.extend(getattr(model, "calibration", ()))
        self._calibrate()
        # its validation set is small: a window's worth of live scores settles the threshold before it may alert
        self.state.settle_left = self.config.window

    # --- scoring -------------------------------------------------------------------------------------------

    def feed(self, timestamp: int, value: float) -> Scored:
        return self.feed_many([(timestamp, value)])[0]

    def feed_many(self, points: list[tuple[int, float]]) -> list[Scored]:
        """Scores a batch of consecutive points (one model forward pass for all of them), then decides in order."""
        times = list(self.times)[-self.config.window:] + [t for t, _ in points]
        offset = len(times) - len(points)
        raw = self._raw_scores(points)
        # each decision's window is the `window` points ending at its point
        return [self._decide(t, v, score, times[max(0, offset + k - self.config.window + 1)])
                for k, ((t, v), score) in enumerate(zip(points, raw))]

    def _raw_scores(self, points: list[tuple[int, float]]) -> list[float]:
        cfg = self.config
        past = list(self.values)
        values = past + [v for _, v in points]
        start = len(past)
        if self.model is not None:
            windows, positions = [], []
            for k in range(len(points)):
                end = start + k + 1
                if end >= cfg.window:
                    windows.append(values[end - cfg.window:end])
                    positions.append(k)
            scores = [0.0] * len(points)
            if windows:
                errors = self.model.errors(np.asarray(windows, dtype=np.float32))
                scale = max(self.model.error_mad * MAD_SCALE, 1e-9)
                for k, err in zip(positions, errors):
                    self.recent_errors.append(float(err))
                    scores[k] = max(0.0, (float(err) - self.model.error_median) / scale)
            self._check_drift()
        else:
            scores = self._fallback_scores(values, start, len(points))
        for t, v in points:
            self.times.append(t)
            self.values.append(v)
        return scores

    def _fallback_scores(self, values: list[float], start: int, n: int) -> list[float]:
        cfg = self.config
        arr = np.asarray(values, dtype=float)
        scores = []
        for k in range(n):
            i = start + k
            ref = arr[max(0, i - cfg.fallback_window):i]
            if len(ref) < 10:
                scores.append(0.0)
                continue
            median = float(np.median(ref))
            mad = float(np.median(np.abs(ref - median))) * MAD_SCALE
            # a flat reference has no spread: measure against a small fraction of its level instead
            scale = mad if mad > 0 else max(abs(median) * 1e-3, 1e-6)
            short = float(arr[max(0, i - cfg.fallback_short + 1):i + 1].mean())
            scores.append(max(abs(arr[i] - median), abs(short - median) * math.sqrt(cfg.fallback_short) / 2) / scale)
        return scores

    def _check_drift(self) -> None:
        cfg = self.config
        if self.model is None or len(self.recent_errors) < cfg.drift_window:
            return
        if float(np.median(self.recent_errors)) > cfg.drift_ratio * max(self.model.error_median, 1e-9):
            self.state.drift_flag = True

    # --- threshold and suppression ---------------------------------------------------------------------------

    def _calibrate(self) -> None:
        cfg = self.config
        if len(self.scores) >= 50:
            q = float(np.quantile(np.fromiter(self.scores, float, len(self.scores)), cfg.threshold_quantile))
            self.state.threshold = max(cfg.threshold_floor, q * cfg.threshold_margin)
        self.state.since_calibration = 0

    def _severity(self, score: float, threshold: float) -> str:
        ratio = score / threshold if threshold > 0 else math.inf
        return next(name for limit, name in self.config.severity_tiers if ratio >= limit)

    def _decide(self, timestamp: int, value: float, score: float, window_start: int) -> Scored:
        cfg, st = self.config, self.state
        st.seen += 1
        st.since_training += 1
        if self.model is None and st.seen == cfg.warmup:
            st.training_reason = "warmup"
        elif self.model is not None and (st.since_training >= cfg.retrain_every or st.drift_flag):
            st.training_reason = "drift" if st.drift_flag else "schedule"
            st.drift_flag, st.since_training = False, 0
        st.since_calibration += 1
        if st.since_calibration >= cfg.calibrate_every:
            self._calibrate()
        threshold = st.threshold
        scored = Scored(timestamp, value, score, threshold)
        if st.excursion_start is None:
            if st.cooldown_left > 0:
                st.cooldown_left -= 1
            if st.settle_left > 0:
                # every live score calibrates while settling
                st.settle_left -= 1
                self.scores.append(score)
            elif st.seen > cfg.warmup and score > threshold and st.cooldown_left == 0:
                st.excursion_start, st.excursion_peak, st.below = timestamp, score, 0
                scored.decision = Decision("trigger", timestamp, value, score, threshold,
                                           self._severity(score, threshold), window_start, timestamp,
                                           self.detector, self.model_version, timestamp)
            elif score <= threshold:
                # what crossed the threshold (suppressed during a cooldown) must not calibrate it
                self.scores.append(score)
            return scored
        # inside an excursion: its scores stay out of the calibration, so an anomaly does not raise the bar
        st.excursion_peak = max(st.excursion_peak, score)
        st.below = st.below + 1 if score < cfg.resolve_ratio * threshold else 0
        if st.below >= cfg.resolve_after:
            scored.decision = Decision("resolve", timestamp, value, score, threshold,
                                       self._severity(st.excursion_peak, threshold), st.excursion_start, timestamp,
                                       self.detector, self.model_version, st.excursion_start)
            st.excursion_start, st.below, st.cooldown_left = None, 0, cfg.cooldown
        return scored

    # --- persistence ---------------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """JSON-able state (the model is referenced by version and stored apart)."""
        return {"values": list(self.values), "times": list(self.times), "scores": list(self.scores),
                "recent_errors": list(self.recent_errors), "state": asdict(self.state),
                "model_version": self.model.version if self.model is not None else None}

    @classmethod
    def restore(cls, data: dict, config: DetectorConfig = DetectorConfig(), model: Model | None = None
                ) -> MetricDetector:
        det = cls(config)
        det.values.extend(data["values"])
        det.times.extend(data["times"])
        det.scores.extend(data["scores"])
        det.recent_errors.extend(data["recent_errors"])
        det.state = _State(**data["state"])
        det.model = model
        return det
