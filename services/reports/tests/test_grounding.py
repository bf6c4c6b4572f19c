"""The narrative guardrail (pure logic): the labelled test set of data/guardrail_set.yaml, and how figures are
filled in."""

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from reports.grounding import Guard, split_sentences

SET = yaml.safe_load((Path(__file__).parent / "data" / "guardrail_set.yaml").read_text())


@pytest.fixture(scope="module")
def guard() -> Guard:
    start, end = (datetime.fromisoformat(t) for t in SET["period"])
    return Guard(SET["figures"], (start, end))


def test_the_set_covers_every_kind_of_wrong_sentence_and_correct_ones():
    labels = {s["label"] for s in SET["sentences"]}
    assert labels == {"ok", "swapped_values", "wrong_unit", "wrong_stream", "invented_number", "unsupported_claim"}


@pytest.mark.parametrize("case", [s for s in SET["sentences"] if s["label"] != "ok"], ids=lambda s: s["text"])
def test_every_wrong_sentence_is_removed(guard: Guard, case: dict):
    checked = guard.check(case["text"])
    assert not checked.ok and checked.problems


@pytest.mark.parametrize("case", [s for s in SET["sentences"] if s["label"] == "ok"], ids=lambda s: s["text"])
def test_correct_sentences_are_kept(guard: Guard, case: dict):
    checked = guard.check(case["text"])
    assert checked.ok, checked.problems


def test_values_are_filled_in_by_code_and_each_links_to_its_figure(guard: Guard):
    checked = guard.check("The mean throughput on line-2 was {k6}, with a highest throughput of {k7}.")
    assert checked.text == "The mean throughput on line-2 was 131.50, with a highest throughput of 143.00."
    assert checked.segments == [{"text": "The mean throughput on line-2 was "}, {"text": "131.50", "ref": "k6"},
                                {"text": ", with a highest throughput of "}, {"text": "143.00", "ref": "k7"},
                                {"text": "."}]
    assert checked.figures == {"131.50": "k6", "143.00": "k7"}
    assert guard.check("On line-2, the share of negative events was {k8}.").text.endswith("was 12.5%.")


def test_each_problem_is_named(guard: Guard):
    assert guard.check("Mean temperature on pump-7 was {k4} degrees.").problems == [
        "{k4} (Mean temperature on pump-7) is given the unit 'degrees'"]
    assert guard.check("The highest temperature on pump-7 was {k4}.").problems == [
        "{k4} (Mean temperature on pump-7) is called a highest"]
    assert guard.check("Pump-9 reported a mean temperature of {k4}.").problems == [
        "names what the report does not hold: Pump-9"]


def test_sentences_split_on_ends_not_on_decimals():
    assert split_sentences("Mean was 43.26 today. Then {k1} events!  Done?") == [
        "Mean was 43.26 today.", "Then {k1} events!", "Done?"]
