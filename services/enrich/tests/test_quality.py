"""Scores of the committed models on fixed subsets of the test splits (the first sentences of each), against the
floors recorded in tests/data/score_floors.json; the old rules and VADER are scored in the same run as the baseline.
The full-split figures are the model card's and `make bench`'s. `pytest -s` prints every figure."""

import json
from pathlib import Path

import pytest

from enrich.datasets import read_conll, read_sst2, read_tweeteval
from enrich.evaluation import encoder_ner, encoder_sentiment, rules_find, sentiment_scores, text_ner, vader_classify
from enrich.models import get_model

FLOORS = json.loads((Path(__file__).parent / "data" / "score_floors.json").read_text())
SUBSET = FLOORS["subset"]  # sentences or texts per set


@pytest.fixture(scope="module")
def encoder():
    return get_model("text").encoder


@pytest.fixture(scope="module")
def sentiment(encoder):
    return sentiment_scores(encoder_sentiment(encoder), "test", SUBSET["sentiment"])


@pytest.mark.parametrize("lang", ["en", "de", "es", "nl"])
def test_entity_f1_per_language_holds_its_floor(encoder, lang):
    scores = encoder_ner(encoder, read_conll(lang, "test")[:SUBSET["ner"]])
    print(f"\nentities {lang} (first {SUBSET['ner']} test sentences): {json.dumps(scores)}")
    assert scores["f1"] >= FLOORS["ner_f1"][lang], scores


def test_english_entity_types_hold_their_floors(encoder):
    scores = encoder_ner(encoder, read_conll("en", "test")[:SUBSET["ner"]])
    for kind, floor in FLOORS["ner_f1_en_per_type"].items():
        assert scores["per_type"][kind] >= floor, (kind, scores["per_type"])


def test_sentiment_holds_its_floors(sentiment):
    print(f"\nsentiment (first {SUBSET['sentiment']} texts): {json.dumps(sentiment)}")
    assert sentiment["sst2_test_accuracy"] >= FLOORS["sst2_test_accuracy"]
    assert sentiment["tweeteval_val_macro_recall"] >= FLOORS["tweeteval_val_macro_recall"]
    # the 570 tweets not in XLM-T English train (the encoder trained on the other 1,430)
    assert sentiment["tweeteval_val_unseen_macro_recall"] >= FLOORS["tweeteval_val_unseen_macro_recall"]


def test_models_beat_the_baseline_in_the_same_run(encoder, sentiment):
    sentences = read_conll("en", "test")[:SUBSET["ner"]]
    rules = text_ner(rules_find, sentences)
    vader = sentiment_scores(vader_classify, "test", SUBSET["sentiment"])
    model = encoder_ner(encoder, sentences)
    print(f"\nbaseline: rules entities en {json.dumps(rules)}; VADER {json.dumps(vader)}")
    assert model["f1"] > rules["f1"] + 0.2
    assert sentiment["sst2_test_accuracy"] > vader["sst2_test_accuracy"] + 0.1
    assert sentiment["tweeteval_val_unseen_macro_recall"] > vader["tweeteval_val_unseen_macro_recall"]


def test_the_subsets_are_what_the_floors_were_recorded_on():
    """Floors only mean something on fixed data: the subsets' sizes and first items are pinned."""
    assert len(read_conll("en", "test")) == 3453 and len(read_sst2("test")) == 872 and len(read_tweeteval()) == 2000
    assert read_conll("en", "test")[0][0][:3] == FLOORS["pinned"]["conll_en_test_first_words"]
