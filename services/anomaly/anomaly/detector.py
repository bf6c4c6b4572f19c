"""The detector of one metric of one stream: feed points, get decisions. Plain, synchronous and deterministic,
so the service and the backtest run exactly the same code, and its decisions do not depend on how the points
are cut into batches nor on how long a training takes.

Scoring. Every point gets a raw anomaly score in "robust z" units (how many scaled MADs it is from normal):
- the statistical score (detector="fallback" before the stream's first model exists): the largest of the
  deviations of the value, of the mean of the last `fallback_short` values and of the mean of the last
  `fallback_long` values from the median of the previous `fallback_window` values, each divided by their MAD
  (1.4826 * median absolute deviation), the means scaled by the square root of their length;
- once a model is installed (detector="lstm-autoencoder"): also the reconstruction error of the window ending at
  the point, standardised by the median and MAD of the model's validation errors (the autoencoder sees shapes, the
  statistics see levels; with `stat_margin` 0 the statistical score stops counting once a model is installed).

Thresholds. Each score has its own, because their tails differ by orders of magnitude from stream to stream (one
bar for the larger of the two, tried first, scored 50.2 on nab-dev's tuning part; one bar each, 62.0). Every
`calibrate_every` points a score's threshold becomes its margin (`stat_margin`, `threshold_margin` for the
autoencoder) times the `threshold_quantile` of its last `threshold_history` values that stayed below it outside
excursions (so anomalies, suppressed ones included, never raise the bar), never below `threshold_floor`. Right
after a model is installed the autoencoder's history restarts with its scores on its validation windows. A point's
reported score and threshold are those of the score furthest above (or nearest to) its threshold.

Suppression. A trigger when a score crosses its threshold (one per excursion), a resolve once every score has
stayed below `resolve_ratio` times its threshold for `resolve_after` points, then `cooldown` points without a new
trigger.
Severity grows with score / threshold.

Models. A training is requested after `warmup` points, every `retrain_every` points after that, and when the median
error of the last `drift_window` points drifts beyond `drift_ratio` times the validation median. The request holds
the history up to the point that made it; its model is installed exactly `install_after` points later, whoever
trains it (the service's worker pool, asynchronously, or the backtest, inline). A model that is not ready by then
holds the stream's later points (`pending`, kept in the snapshot) until `offer` hands it over: the points a model
scores never depend on how fast it was trained.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

FALLBACK = "fallback"
LSTM = "lstm-autoencoder"
MAD_SCALE = 1.4826


def model_version(key: str, metric: str, span_end: int) -> str:
    """The version of the model of stream `key` and `metric` trained on the history up to `span_end`."""
    return f"lstm:{key}:{metric}:{span_end}"


@dataclass(frozen=True)
class DetectorConfig:
    window: int = 32
    history: int = 2000
    warmup: int = 150
    install_after: int = 64
    settle: int = 100
    fallback_window: int = 200
    fallback_short: int = 5
    fallback_long: int = 0  # 0: no long-mean scale
    seasonal: float = 3.0  # > 0: a daily baseline where it explains the last day this much better than the level
    seasonal_min: bool = False  # with a daily baseline: unusual only if unusual against both
    stat_margin: float = 2.0  # the statistical score's threshold margin; 0: not used once a model is installed
    threshold_quantile: float = 0.999
    threshold_margin: float = 1.5  # the autoencoder score's
    threshold_floor: float = 3.0
    threshold_history: int = 2000
    calibrate_every: int = 50
    resolve_ratio: float = 0.7
    resolve_after: int = 10
    cooldown: int = 50
    retrain_every: int = 5000
    retrain_doubling: bool = True  # also retrain whenever the history has doubled since the last training
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
    context: Any = None  # what the caller fed with the point (the service: the event it came from)


@dataclass
class TrainingRequest:
    reason: str  # warmup, schedule or drift
    values: np.ndarray  # the history up to the point that asked
    span: list[int]  # its first and last timestamps
    install_at: int  # the point (count of points decided) at which its model is installed


@dataclass
class _State:
    seen: int = 0
    threshold: float = 0.0  # the autoencoder score's
    stat_threshold: float = 0.0
    since_calibration: int = 0
    since_training: int = 0
    excursion_start: int | None = None
    excursion_peak: float = 0.0  # the largest ratio of a score to its threshold
    below: int = 0
    cooldown_left: int = 0
    settle_left: int = 0  # points after a model install during which nothing is raised
    install_at: int = -1  # the point at which the requested model is installed, -1 when none is requested


class MetricDetector:
    def __init__(self, config: DetectorConfig = DetectorConfig(), trains: bool = True):
        self.config = config
        self.trains = trains  # False: the statistical score only, no training is ever requested
        self.values: deque[float] = deque(maxlen=config.history)
        self.times: deque[int] = deque(maxlen=config.history)
        self.scores: deque[float] = deque(maxlen=config.threshold_history)  # the autoencoder's
        self.stat_scores: deque[float] = deque(maxlen=config.threshold_history)
        self.recent_errors: deque[float] = deque(maxlen=config.drift_window)
        self.pending: deque[tuple[int, float, Any]] = deque()
        self.state = _State(threshold=config.threshold_floor, stat_threshold=config.threshold_floor)
        self.model: Model | None = None
        self.request: TrainingRequest | None = None
        self.request_taken = False
        self.ready: Model | None = None

    # --- models ------------------------------------------------------------------------------------------

    @property
    def detector(self) -> str:
        return LSTM if self.model is not None else FALLBACK

    @property
    def model_version(self) -> str:
        return self.model.version if self.model is not None else FALLBACK

    @property
    def blocked(self) -> bool:
        """Points are held until the requested model is offered."""
        return bool(self.pending) and self.state.install_at >= 0 and self.state.seen >= self.state.install_at

    def wants_training(self) -> str:
        """Why a new model is wanted (warmup, schedule, drift) when no trainer has taken the request yet, else ""."""
        return self.request.reason if self.request is not None and not self.request_taken else ""

    def take_request(self) -> TrainingRequest | None:
        """The outstanding request for a trainer; None when there is none or a trainer already has it."""
        if self.request is None or self.request_taken:
            return None
        self.request_taken = True
        return self.request

    def offer(self, model: Model) -> list[Scored]:
        """Hands over the model of the outstanding request; it is installed at its point. Returns the held points
        this lets through."""
        self.ready = model
        return self._drain()

    def abandon_request(self) -> list[Scored]:
        """Gives up the outstanding request (its training failed): the current scorer goes on, and the next
        scheduled request tries again. Returns the held points this lets through."""
        self.request, self.request_taken, self.ready = None, False, None
        self.state.install_at = -1
        self.state.since_training = 0
        return self._drain()

    def install(self, model: Model) -> None:
        """Switches scoring to `model` now (the detector calls it at its request's point); scores of the previous
        scorer no longer calibrate the threshold."""
        self.model = model
        self.request, self.request_taken, self.ready = None, False, None
        self.state.install_at = -1
        self.state.since_training = 0
        self.recent_errors.clear()
        # the threshold is recalibrated at once on the new model's validation scores, not the old scorer's
        self.scores.clear()
        self.scores.extend(getattr(model, "calibration", ()))
        self._calibrate()
        # its validation set is small: `settle` live scores settle the threshold before it may alert
        self.state.settle_left = self.config.settle

    # --- scoring -------------------------------------------------------------------------------------------

    def feed(self, timestamp: int, value: float, context: Any = None) -> Scored | None:
        scored = self.feed_many([(timestamp, value)], [context])
        return scored[0] if scored else None

    def feed_many(self, points: list[tuple[int, float]], contexts: list | None = None) -> list[Scored]:
        """Scores consecutive points, each with its optional context; returns the points scored by now, in order
        (held ones come back from a later call, once their model is offered)."""
        contexts = contexts if contexts is not None else [None] * len(points)
        self.pending.extend((t, v, c) for (t, v), c in zip(points, contexts, strict=True))
        return self._drain()

    def _drain(self) -> list[Scored]:
        st, out = self.state, []
        while self.pending:
            if st.install_at >= 0 and st.seen >= st.install_at:
                if self.ready is None:
                    break  # the model is still training: its points wait for it
                self.install(self.ready)
            # one model pass for the points up to the next install (or all of them)
            limit = len(self.pending) if st.install_at < 0 else min(len(self.pending), st.install_at - st.seen)
            segment = [self.pending[i] for i in range(limit)]
            raw = self._raw_scores([v for _, v, _ in segment], [t for t, _, _ in segment])
            for (t, v, ctx), scores in zip(segment, raw, strict=True):
                self.pending.popleft()
                out.append(self._decide(t, v, scores, ctx))
                if st.install_at >= 0 and st.seen >= st.install_at:
                    break  # a request made in this segment is due: the rest is scored by its model
        return out

    def _raw_scores(self, new: list[float], new_times: list[int]) -> list[tuple]:
        """(statistical score, reconstruction error, autoencoder score) of each of `new`, following the history;
        just the first while no model is installed."""
        cfg = self.config
        values = np.asarray(list(self.values) + new, dtype=float)
        start = len(values) - len(new)
        stat = self._stat_scores(values, start, self._period(new_times))
        if self.model is None:
            return [(s,) for s in stat]
        out: list = [(s, None) for s in stat]
        positions = [k for k in range(len(new)) if start + k + 1 >= cfg.window]
        if positions:
            windows = np.lib.stride_tricks.sliding_window_view(values, cfg.window)[[start + k + 1 - cfg.window
                                                                                    for k in positions]]
            errors = self.model.errors(windows.astype(np.float32))
            scale = max(self.model.error_mad * MAD_SCALE, 1e-9)
            for k, err in zip(positions, errors, strict=True):
                out[k] = (out[k][0], float(err), max(0.0, (float(err) - self.model.error_median) / scale))
        return out

    def _period(self, new_times: list[int]) -> int:
        """Points per day at the stream's sampling interval, 0 when the seasonal baseline is off or cannot apply."""
        if self.config.seasonal <= 0:
            return 0
        times = (list(self.times)[-64:] + new_times)[-64:]
        if len(times) < 16:
            return 0
        step = float(np.median(np.diff(times)))
        period = round(86_400_000 / step) if step > 0 else 0
        return period if 2 <= period <= self.config.history - self.config.fallback_window else 0

    def _stat_scores(self, arr: np.ndarray, start: int, period: int = 0) -> list[float]:
        cfg = self.config
        scales = [(1, 1.0), (cfg.fallback_short, math.sqrt(cfg.fallback_short) / 2)]
        if cfg.fallback_long > 0:
            scales.append((cfg.fallback_long, math.sqrt(cfg.fallback_long) / 2))
        # the change since the same time a day earlier: a daily pattern is normal there, a missing one is not
        seasonal = arr[period:] - arr[:-period] if period else None
        scores = self._robust_many(arr, start, scales)
        for k, i in enumerate(range(start, len(arr))):
            if seasonal is not None and i - period >= max(cfg.fallback_window, period):
                # over the last day, does "as yesterday" explain the values `seasonal` times better than their level?
                if cfg.seasonal_min or (float(seasonal[i - 2 * period:i - period].std()) * cfg.seasonal
                                        < float(arr[i - period:i].std())):
                    s_score = self._robust(seasonal, i - period, scales)
                    scores[k] = min(scores[k], s_score) if cfg.seasonal_min else s_score
        return scores

    def _robust_many(self, arr: np.ndarray, start: int, scales: list[tuple[int, float]]) -> list[float]:
        """`_robust` of arr[start:], its medians computed for all the points at once (the same values, one numpy
        call instead of two per point)."""
        window = self.config.fallback_window
        full = max(start, window)
        scores = [self._robust(arr, i, scales) for i in range(start, min(full, len(arr)))]
        if len(arr) > full:
            refs = np.lib.stride_tricks.sliding_window_view(arr, window)[full - window:len(arr) - window]
            medians = np.median(refs, axis=1)
            mads = np.median(np.abs(refs - medians[:, None]), axis=1)
            for i, median, mad in zip(range(full, len(arr)), medians.tolist(), mads.tolist(), strict=True):
                scores.append(self._score(arr, i, scales, median, mad * MAD_SCALE))
        return scores

    def _robust(self, arr: np.ndarray, i: int, scales: list[tuple[int, float]]) -> float:
        """Score of arr[i] against the `fallback_window` values before it."""
        ref = arr[max(0, i - self.config.fallback_window):i]
        if len(ref) < 10:
            return 0.0
        median = float(np.median(ref))
        return self._score(arr, i, scales, median, float(np.median(np.abs(ref - median))) * MAD_SCALE)

    @staticmethod
    def _score(arr: np.ndarray, i: int, scales: list[tuple[int, float]], median: float, mad: float) -> float:
        # a flat reference has no spread: measure against a small fraction of its level instead
        scale = mad if mad > 0 else max(abs(median) * 1e-3, 1e-6)
        return max(abs(float(arr[max(0, i - n + 1):i + 1].mean()) - median) * weight for n, weight in scales) / scale

    def _check_drift(self, error: float, model: Model) -> None:
        cfg, st = self.config, self.state
        self.recent_errors.append(error)
        # checked every quarter window (a median per point would cost as much as the model)
        if (len(self.recent_errors) == cfg.drift_window and st.since_training % max(cfg.drift_window // 4, 1) == 0
                and float(np.median(self.recent_errors)) > cfg.drift_ratio * max(model.error_median, 1e-9)):
            self._request("drift")

    def _request(self, reason: str) -> None:
        if self.request is not None or not self.trains:
            return  # one training at a time
        times = list(self.times)
        self.request = TrainingRequest(reason, np.fromiter(self.values, float, len(self.values)),
                                       [times[0], times[-1]], self.state.seen + self.config.install_after)
        self.request_taken = False
        self.state.install_at = self.request.install_at

    # --- threshold and suppression ---------------------------------------------------------------------------

    def _calibrate(self) -> None:
        cfg, st = self.config, self.state
        st.threshold = self._bar(self.scores, cfg.threshold_margin, st.threshold)
        st.stat_threshold = self._bar(self.stat_scores, cfg.stat_margin or cfg.threshold_margin, st.stat_threshold)
        st.since_calibration = 0

    def _bar(self, scores: deque[float], margin: float, current: float) -> float:
        if len(scores) < 50:
            return current
        q = float(np.quantile(np.fromiter(scores, float, len(scores)), self.config.threshold_quantile))
        return max(self.config.threshold_floor, q * margin)

    def _severity(self, ratio: float) -> str:
        """The tier of a score's ratio to its threshold."""
        return next(name for limit, name in self.config.severity_tiers if ratio >= limit)

    def _components(self, scores: tuple) -> list[tuple[float, float, deque[float]]]:
        """(score, threshold, calibration history) of each score that counts at this point."""
        st = self.state
        stat = (scores[0], st.stat_threshold, self.stat_scores)
        if len(scores) == 1 or scores[2] is None:  # no model, or its first window is not full yet
            return [stat]
        lstm = (scores[2], st.threshold, self.scores)
        return [stat, lstm] if self.config.stat_margin > 0 else [lstm]

    def _decide(self, timestamp: int, value: float, scores: tuple, context: Any) -> Scored:
        cfg, st = self.config, self.state
        error = scores[1] if len(scores) > 1 else None
        # the window of a point is the `window` points ending at it
        back = cfg.window - 1
        window_start = self.times[max(0, len(self.times) - back)] if self.times and back > 0 else timestamp
        self.times.append(timestamp)
        self.values.append(value)
        st.seen += 1
        st.since_training += 1
        if self.model is None and st.seen == cfg.warmup:
            self._request("warmup")
        elif self.model is not None:
            if error is not None:
                self._check_drift(error, self.model)
            if st.since_training >= cfg.retrain_every or (
                    cfg.retrain_doubling and st.since_training >= st.seen - st.since_training
                    and st.seen - st.since_training < cfg.history):
                self._request("schedule")
        st.since_calibration += 1
        if st.since_calibration >= cfg.calibrate_every:
            self._calibrate()
        components = self._components(scores)
        score, threshold, _ = max(components, key=lambda c: c[0] / max(c[1], 1e-12))
        ratio = score / max(threshold, 1e-12)
        scored = Scored(timestamp, value, score, threshold, None, context)
        if st.excursion_start is None:
            if st.cooldown_left > 0:
                st.cooldown_left -= 1
            if st.settle_left > 0:
                # every live score calibrates while settling
                st.settle_left -= 1
                for s, _, history in components:
                    history.append(s)
            elif st.seen > cfg.warmup and ratio > 1 and st.cooldown_left == 0:
                st.excursion_start, st.excursion_peak, st.below = timestamp, ratio, 0
                scored.decision = Decision("trigger", timestamp, value, score, threshold,
                                           self._severity(ratio), window_start, timestamp,
                                           self.detector, self.model_version, timestamp)
            else:
                # what crossed its threshold (suppressed during a cooldown) must not calibrate it
                for s, bar, history in components:
                    if s <= bar:
                        history.append(s)
            return scored
        # inside an excursion: its scores stay out of the calibration, so an anomaly does not raise the bar
        st.excursion_peak = max(st.excursion_peak, ratio)
        st.below = st.below + 1 if ratio < cfg.resolve_ratio else 0
        if st.below >= cfg.resolve_after:
            scored.decision = Decision("resolve", timestamp, value, score, threshold,
                                       self._severity(st.excursion_peak), st.excursion_start, timestamp,
                                       self.detector, self.model_version, st.excursion_start)
            st.excursion_start, st.below, st.cooldown_left = None, 0, cfg.cooldown
        return scored

    # --- persistence ---------------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """JSON-able state (the model is referenced by version and stored apart; an outstanding request keeps its
        training data, so a restart trains the same model)."""
        request = None if self.request is None else {
            "reason": self.request.reason, "values": self.request.values.tolist(), "span": self.request.span,
            "install_at": self.request.install_at}
        return {"values": list(self.values), "times": list(self.times), "scores": list(self.scores),
                "stat_scores": list(self.stat_scores), "recent_errors": list(self.recent_errors),
                "pending": [list(p) for p in self.pending], "request": request, "state": asdict(self.state),
                "model_version": self.model.version if self.model is not None else None}

    @classmethod
    def restore(cls, data: dict, config: DetectorConfig = DetectorConfig(), model: Model | None = None
                ) -> MetricDetector:
        det = cls(config)
        det.values.extend(data["values"])
        det.times.extend(data["times"])
        det.scores.extend(data["scores"])
        det.recent_errors.extend(data["recent_errors"])
        det.stat_scores.extend(data.get("stat_scores", ()))
        det.pending.extend(tuple(p) for p in data.get("pending", ()))
        state = data["state"]
        det.state = _State(**{k: v for k, v in state.items() if k in _State.__dataclass_fields__})
        if "stat_threshold" not in state:  # saved before the scores had a threshold each
            det.state.stat_threshold = det.state.threshold
        if (request := data.get("request")) is not None:
            det.request = TrainingRequest(request["reason"], np.asarray(request["values"], dtype=float),
                                          request["span"], request["install_at"])
        det.model = model
        return det
