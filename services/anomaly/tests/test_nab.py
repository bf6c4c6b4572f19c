"""NAB standard-profile scoring on cases computed by hand from NAB's rules."""

import math

import pytest

from anomaly import nab

# 100 rows: probationary length floor(0.15 * 100) = 15; one window over rows 40..49 (width 10)
T = list(range(100))
WINDOW = [(40, 49)]
MAX_TP = 2 / (1 + math.exp(-5)) - 1  # 0.98661, the scaled sigmoid at a window's left edge


def hits(*rows: int) -> list[bool]:
    return [i in rows for i in T]


def test_scaled_sigmoid_anchor_points():
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(3.0) == -1.0


def test_probationary_length_is_15_percent_capped_at_750():
    assert nab.probationary_length(100) == 15
    assert nab.probationary_length(4033) == 604
    assert nab.probationary_length(22695) == 750


def test_detection_at_left_edge_scores_tp_weight():
    assert nab.score_file(T, hits(40), WINDOW) == pytest.approx(1.0)


def test_late_detection_scores_less():
    # position -(49 - 49 + 1) / 10 = -0.1: (2 / (1 + e^-0.5) - 1) / 0.98661 = 0.248242
    assert nab.score_file(T, hits(49), WINDOW) == pytest.approx(0.248242, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts():
    assert nab.score_file(T, hits(45, 46, 47), WINDOW) == nab.score_file(T, hits(45), WINDOW)
    # position -(49 - 45 + 1) / 10 = -0.5: 0.84828 / 0.98661 = 0.859793
    assert nab.score_file(T, hits(45), WINDOW) == pytest.approx(0.859793, abs=1e-6)


def test_missed_window_costs_fn_weight():
    assert nab.score_file(T, hits(), WINDOW) == -1.0


def test_false_positive_before_any_window_costs_fp_weight():
    assert nab.score_file(T, hits(20), WINDOW) == pytest.approx(-1.0 - 0.11)


def test_false_positive_after_a_window_is_weighted_by_distance():
    # position |49 - 54| / (10 - 1) = 0.5556: 0.11 * (2 / (1 + e^2.7778) - 1) = -0.097122
    assert nab.score_file(T, hits(40, 54), WINDOW) == pytest.approx(1.0 - 0.097122, abs=1e-6)


def test_probationary_detections_are_ignored():
    assert nab.score_file(T, hits(10), WINDOW) == -1.0


def test_corpus_is_normalised_between_null_and_perfect(tmp_path):
    stamps = [f"2020-01-01 00:{i // 60:02d}:{i % 60:02d}" for i in T]
    labels = {"a.csv": [[stamps[40], stamps[49]]], "b.csv": []}
    for name, rows in {"a.csv": (40,), "b.csv": (30,)}.items():
        lines = ["timestamp,value,anomaly_score,is_anomaly"]
        lines += [f"{s},0,0,{int(i in rows)}" for i, s in enumerate(stamps)]
        (tmp_path / name).write_text("\n".join(lines))
    result = nab.score_corpus(nab.read_results(tmp_path, labels), labels)
    assert result.null == -1.0 and result.perfect == pytest.approx(1.0)
    # raw = 1.0 (window at its left edge) - 0.11 (b.csv false positive) -> 100 * (0.89 + 1) / 2
    assert result.score == pytest.approx(94.5)
    assert nab.main([str(tmp_path), str(tmp_path / "missing.json")]) == 2
