"""The synchronous detector the service and the backtest share: the statistical fallback, and where a model is
installed (a numpy model stands in for the autoencoder here: the install rules are under test, not torch)."""

import numpy as np
import pytest

from anomaly.detector import FALLBACK, LSTM, DetectorConfig, MetricDetector

CONFIG = DetectorConfig(warmup=100)


def fallback() -> MetricDetector:
    return MetricDetector(CONFIG, trains=False)


class MeanModel:
    """Predicts each value by the one before: the error is the window's mean squared step, standardised on a
    calm wave as a trained model's validation errors are."""

    def __init__(self, version: str):
        self.version = version
        calm = self.errors(np.lib.stride_tricks.sliding_window_view(wave(400, 99), CONFIG.window)[::4])
        self.error_median = float(np.median(calm))
        self.error_mad = float(np.median(np.abs(calm - self.error_median)))
        self.calibration = list((calm - self.error_median) / (self.error_mad * 1.4826))

    def errors(self, windows: np.ndarray) -> np.ndarray:
        return (np.diff(windows, axis=1) ** 2).mean(axis=1)


def wave(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + 5 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.5, n)


def run(detector: MetricDetector, values, start: int = 0):
    return [d for k, v in enumerate(values)
            if (d := detector.feed(60_000 * (start + k), float(v)).decision) is not None]


def test_steady_stream_raises_nothing():
    assert run(fallback(), wave(1500, 1)) == []


def test_spike_raises_one_trigger_then_one_resolve():
    values = wave(800, 2)
    values[500:504] += 40
    decisions = run(fallback(), values)
    assert [d.action for d in decisions] == ["trigger", "resolve"]
    trigger, resolve = decisions
    assert trigger.timestamp == 500 * 60_000 and trigger.detector == FALLBACK
    assert trigger.score > trigger.threshold
    ratio = trigger.score / trigger.threshold
    assert trigger.severity == next(name for limit, name in CONFIG.severity_tiers if ratio >= limit)
    assert trigger.window_end - trigger.window_start == (CONFIG.window - 1) * 60_000
    assert resolve.excursion_start == trigger.excursion_start and resolve.timestamp > trigger.timestamp


def test_cooldown_suppresses_a_second_trigger_right_after_a_resolve():
    values = wave(900, 3)
    values[500:504] += 40
    values[530:534] += 40  # within the cooldown of the first excursion's resolve
    values[800:804] += 40  # after it
    triggers = [d.timestamp // 60_000 for d in run(fallback(), values) if d.action == "trigger"]
    assert triggers == [500, 800]


def test_no_alert_during_warmup():
    values = wave(300, 4)
    values[50] += 40
    assert run(fallback(), values) == []


def test_training_is_requested_after_warmup_with_the_history_up_to_that_point():
    det = MetricDetector(CONFIG)
    values = wave(CONFIG.warmup + 10, 5)
    run(det, values)
    assert det.wants_training() == "warmup"
    request = det.take_request()
    assert request.span == [0, (CONFIG.warmup - 1) * 60_000] and request.install_at == CONFIG.warmup + 64
    assert np.array_equal(request.values, values[:CONFIG.warmup])
    assert det.wants_training() == "" and det.take_request() is None


def decisions_with(batch: int, offer_after: int) -> list:
    """Feeds a series in batches of `batch`, offering the model `offer_after` batches after it was requested."""
    values = wave(800, 7)
    values[600:604] += 40
    det, out, waiting, request = MetricDetector(CONFIG), [], 0, None
    for start in range(0, len(values), batch):
        out += det.feed_many([(60_000 * (start + k), float(v)) for k, v in enumerate(values[start:start + batch])])
        request = request or det.take_request()
        if request is not None:
            waiting += 1
            if waiting > offer_after:
                out += det.offer(MeanModel(f"m@{request.span[1]}"))
                request, waiting = None, 0
    while request is not None:  # the end of the series: what is still training arrives
        out += det.offer(MeanModel(f"m@{request.span[1]}"))
        request = det.take_request()
    assert not det.pending
    return [(s.timestamp, s.score, s.decision) for s in out]


@pytest.mark.parametrize("batch,offer_after", [(1, 0), (7, 3), (64, 1), (500, 0), (800, 5)])
def test_decisions_do_not_depend_on_batching_nor_on_when_the_model_arrives(batch, offer_after):
    reference = decisions_with(1, 0)
    assert len(reference) == 800
    assert decisions_with(batch, offer_after) == reference
    triggers = [d for _, _, d in reference if d is not None and d.action == "trigger"]
    # the spike is raised by the model of the second request (the history doubled since the first model's
    # install at warmup + install_after = 164), installed install_after points after it, under its version
    assert [(d.timestamp, d.detector, d.model_version) for d in triggers] == [(600 * 60_000, LSTM, f"m@{327 * 60_000}")]


def test_points_past_the_install_point_wait_for_the_model():
    det = MetricDetector(CONFIG)
    done = det.feed_many([(60_000 * i, float(v)) for i, v in enumerate(wave(300, 8))])
    install_at = CONFIG.warmup + CONFIG.install_after
    assert len(done) == install_at and len(det.pending) == 300 - install_at and det.blocked
    # the snapshot keeps what waits and the request, so a restart trains the same model and scores them
    restored = MetricDetector.restore(det.snapshot(), CONFIG)
    assert restored.blocked and np.array_equal(restored.take_request().values, det.take_request().values)
    later = det.offer(MeanModel("m"))
    assert len(later) == 300 - install_at and not det.pending and det.model_version == "m"
    assert later[0].timestamp == install_at * 60_000


def test_restored_detector_decides_exactly_like_the_original():
    values = wave(900, 6)
    values[600:604] += 40
    original = fallback()
    run(original, values[:550])
    restored = MetricDetector.restore(original.snapshot(), CONFIG)
    assert run(restored, values[550:], 550) == run(original, values[550:], 550)
