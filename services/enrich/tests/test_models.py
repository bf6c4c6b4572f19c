"""The models themselves: sentiment classes, entity offsets into the original text, PII masking."""

import pytest
from enrich.models import get_model
from enrich.models.sentiment import VaderSentiment
from enrich.pii import mask
from enrich.pipeline import looks_like_text, plan


@pytest.mark.parametrize(("compound", "label", "intensity"), [
    (0.0, "neutral", "low"), (0.049, "neutral", "low"), (0.05, "positive", "low"), (0.5, "positive", "medium"),
    (0.9, "positive", "high"), (-0.2, "negative", "low"), (-0.64, "negative", "medium"), (-0.65, "negative", "high"),
])
def test_sentiment_classes(compound, label, intensity):
    assert VaderSentiment.classify(compound) == {"label": label, "intensity": intensity, "score": compound}


def test_sentiment_reads_the_text():
    good, bad = get_model("sentiment").predict(["I absolutely love this, wonderful!", "This is awful, I hate it."])
    assert (good["label"], good["intensity"]) == ("positive", "high")
    assert bad["label"] == "negative" and bad["score"] < -0.5


def test_entities_index_the_original_text():
    text = "Ünïcode 😀 first: Tim Cook told Reuters that Apple paid €1.2 billion (up 12%) in Berlin on 3 May 2024."
    entities = get_model("ner").entities(text)
    assert {(e["text"], e["label"]) for e in entities} == {
        ("Tim Cook", "PERSON"), ("Reuters", "ORG"), ("Apple", "ORG"), ("€1.2 billion", "MONEY"), ("12%", "PERCENT"),
        ("Berlin", "LOCATION"), ("3 May 2024", "DATE")}
    for e in entities:
        assert text[e["start"]:e["end"]] == e["text"] and 0 < e["confidence"] <= 1


def test_models_have_name_and_version():
    for task in ("sentiment", "ner"):
        model = get_model(task)
        assert model.name and model.version and model.task == task


def test_pii_is_masked():
    text = ("Mail jane.doe+x@example.co.uk, call +1 (415) 555-0134 or 030 1234 5678, card 4111 1111 1111 1111, "
            "IBAN DE89 3704 0044 0532 0130 00, account no. 12345678. Paid $999 on 2024-05-01, up 12%.")
    masked = mask(text)
    for secret in ("jane.doe", "555-0134", "1234 5678", "4111", "DE89", "12345678"):
        assert secret not in masked
    for kept in ("$999", "2024-05-01", "12%", "[EMAIL]", "[PHONE]", "[CARD]", "[ACCOUNT]"):
        assert kept in masked


def test_plan_passes_through_what_it_cannot_enrich():
    assert plan({"text": {}}, 100) == ({}, "empty")
    assert plan({"text": {"a": "   "}}, 100) == ({}, "empty")
    assert plan({"text": {"a": "x" * 101}}, 100) == ({}, "too_large")
    assert plan({"text": {"a": "\x00\x01\x02binary"}}, 100) == ({}, "not_text")
    assert plan({"text": {"a": "fine", "b": "y" * 101}}, 100) == ({"a": "fine"}, "partial")
    assert looks_like_text("Line one\nline two\ttab") and not looks_like_text("\ufffd\ufffd\ufffdab")
