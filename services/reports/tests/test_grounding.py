"""The numeric grounding guardrail's matching rules (pure logic)."""

from datetime import UTC, datetime

import pytest

from reports.grounding import Guard, Source, numbers_in, parse_number, split_sentences

PERIOD = (datetime(2026, 11, 19, 12, tzinfo=UTC), datetime(2026, 11, 20, 12, tzinfo=UTC))


@pytest.fixture
def guard() -> Guard:
    return Guard([Source("k1", "figure", [43.2567], "Mean temperature on pump-7"),
                  Source("k2", "figure", [1234.0], "Events in the period"),
                  Source("k3", "figure", [-12.5], "Change of throughput on line-2"),
                  Source("a1", "figure", [97.5, 8.25, 3.5], "Critical anomaly in temperature on pump-7"),
                  Source("k4", "figure", [97.5], "Highest temperature on pump-7"),
                  Source("doc#0", "passage", [60.0, 99.5], "Strategy")],
                 ["pump-7", "line-2", "sensor-12"], PERIOD)


def test_numbers_are_read_with_their_decimals_signs_separators_and_percent():
    assert numbers_in("From 1,234 to -12.5 (99.5%), up 3") == ["1,234", "-12.5", "99.5%", "3"]
    assert parse_number("1,234.50") == (1234.5, 2) and parse_number("99.5%") == (99.5, 1)


@pytest.mark.parametrize("sentence", [
    "Mean temperature was 43.26.",  # the figure at the precision written
    "Mean temperature was about 43.",
    "There were 1,234 events.",
    "Throughput fell by 12.5 on line-2.",  # a negative figure stated as a size
    "The target is 99.5% availability and 60 degrees.",  # numbers of a cited passage
    "Readings on sensor-12 and pump-7 were normal.",  # digits inside names are not figures
    "On 2026-11-20 all was quiet.",  # the period's dates
])
def test_grounded(guard: Guard, sentence: str):
    assert guard.check(sentence).ok, guard.check(sentence).ungrounded


@pytest.mark.parametrize("sentence, ungrounded", [
    ("Mean temperature was 43.3 and revenue 9999.", ["9999"]),
    ("Mean temperature was 43.27.", ["43.27"]),  # a wrong rounding is not the figure
    ("Throughput rose by +12.5.", ["+12.5"]),
    ("Mean temperature was 42.7.", ["42.7"]),  # the sign must agree when one is written
    ("Satisfaction reached 73.5%.", ["73.5%"]),
    ("On 2026-11-21 events doubled.", ["21"]),  # not a date of the period
    ("Sensor-31 reported 7 issues.", ["31", "7"]),  # an unknown name's digits count
])
def test_ungrounded(guard: Guard, sentence: str, ungrounded: list[str]):
    assert guard.check(sentence).ungrounded == ungrounded


def test_a_number_cites_the_figure_its_sentence_is_about(guard: Guard):
    assert guard.check("The critical anomaly in temperature reached 97.5.").grounded == {"97.5": "a1"}
    assert guard.check("The highest temperature was 97.5.").grounded == {"97.5": "k4"}


def test_sentences_split_on_ends_not_on_decimals():
    assert split_sentences("It was 43.26 degrees. Then 49 events!  Fine?") == [
        "It was 43.26 degrees.", "Then 49 events!", "Fine?"]
