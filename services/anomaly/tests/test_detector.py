"""The synchronous detector the service and the backtest share (statistical fallback; no model)."""

import numpy as np

from anomaly.detector import FALLBACK, DetectorConfig, MetricDetector

CONFIG = DetectorConfig(warmup=100)


def wave(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + 5 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.5, n)


def run(detector: MetricDetector, values, start: int = 0):
    return [d for k, v in enumerate(values)
            if (d := detector.feed(60_000 * (start + k), float(v)).decision) is not None]


def test_steady_stream_raises_nothing():
    assert run(MetricDetector(CONFIG), wave(1500, 1)) == []


def test_spike_raises_one_trigger_then_one_resolve():
    values = wave(800, 2)
    values[500:504] += 40
    decisions = run(MetricDetector(CONFIG), values)
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
    triggers = [d.timestamp // 60_000 for d in run(MetricDetector(CONFIG), values) if d.action == "trigger"]
    assert triggers == [500, 800]


def test_no_alert_during_warmup():
    values = wave(300, 4)
    values[50] += 40
    assert run(MetricDetector(CONFIG), values) == []


def test_training_is_requested_after_warmup():
    det = MetricDetector(CONFIG)
    run(det, wave(CONFIG.warmup, 5))
    assert det.wants_training() == "warmup"
    values, span = det.training_data()
    assert len(values) == CONFIG.warmup and span == [0, (CONFIG.warmup - 1) * 60_000]
    assert det.wants_training() == ""


def test_restored_detector_decides_exactly_like_the_original():
    values = wave(900, 6)
    values[600:604] += 40
    original = MetricDetector(CONFIG)
    run(original, values[:550])
    restored = MetricDetector.restore(original.snapshot(), CONFIG)
    assert run(restored, values[550:], 550) == run(original, values[550:], 550)
