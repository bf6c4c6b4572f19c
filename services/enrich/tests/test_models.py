"""The models themselves: entity offsets into the original text, long texts, sentiment classes, languages, routing,
PII masking. The encoder is the committed artifact, run by ONNX Runtime as the `local` backend runs it."""

import pytest

from enrich.language import UNDETERMINED, detect
from enrich.models import PATTERN_LABELS, get_model, merge
from enrich.models.sentiment import VaderSentiment
from enrich.pii import mask
from enrich.pipeline import Languages, looks_like_text, plan


@pytest.fixture(scope="module")
def model():
    return get_model("text")


@pytest.mark.parametrize(("compound", "label", "intensity"), [
    (0.0, "neutral", "low"), (0.049, "neutral", "low"), (0.05, "positive", "low"), (0.5, "positive", "medium"),
    (0.9, "positive", "high"), (-0.2, "negative", "low"), (-0.64, "negative", "medium"), (-0.65, "negative", "high"),
])
def test_vader_baseline_classes(compound, label, intensity):
    assert VaderSentiment.classify(compound) == {"label": label, "intensity": intensity, "score": compound}


def test_entities_index_the_original_text_and_name_their_model(model):
    text = ("Ünïcode 😀 first: Tim Cook told Reuters in London that Apple paid €1.2 billion (up 12%) to the "
            "European Commission on 3 May 2024.")
    [result] = model.predict([text])
    found = {(e["text"], e["label"], e["model"]) for e in result["entities"]}
    encoder, patterns = model.encoder.name, model.patterns.name
    assert {("Tim Cook", "PERSON", encoder), ("London", "LOCATION", encoder), ("Apple", "ORG", encoder),
            ("€1.2 billion", "MONEY", patterns), ("12%", "PERCENT", patterns),
            ("3 May 2024", "DATE", patterns)} <= found
    for e in result["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and 0 < e["confidence"] <= 1
        assert e["label"] in {"PERSON", "ORG", "LOCATION", "MISC"} | PATTERN_LABELS


def test_a_long_text_is_read_to_its_end(model):
    """Past the encoder's window (128 tokens) the text is cut into windows: an entity at the end is still found."""
    filler = "The committee discussed the budget for a long time without reaching any decision. " * 30
    text = filler + "Angela Merkel arrived in Berlin."
    assert len(model.prepare([text]).row_text) > 2
    [result] = model.predict([text])
    tail = [e for e in result["entities"] if e["start"] >= len(filler)]
    assert ("Angela Merkel", "PERSON") in {(e["text"], e["label"]) for e in tail}
    assert ("Berlin", "LOCATION") in {(e["text"], e["label"]) for e in tail}


def test_sentiment_has_three_classes_a_polarity_and_a_score(model):
    good, bad = (r["sentiment"] for r in model.predict(["I absolutely love this, what a wonderful film!",
                                                         "This is awful, a boring waste of time."]))
    assert (good["label"], good["polarity"]) == ("positive", "positive") and good["score"] > 0.3
    assert (bad["label"], bad["polarity"]) == ("negative", "negative") and bad["score"] < -0.3
    for s in (good, bad):
        assert -1 <= s["score"] <= 1 and s["intensity"] in {"low", "medium", "high"}
        assert sum(s["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_models_name_their_version(model):
    assert {r.task for r in model.refs} == {"ner", "sentiment"}
    assert all(r.name and r.version for r in model.refs)


def test_pattern_entities_never_overlap_the_encoders():
    encoder = [{"start": 0, "end": 10, "label": "ORG"}]
    patterns = [{"start": 5, "end": 12, "label": "PRODUCT"}, {"start": 11, "end": 14, "label": "MONEY"}]
    assert merge(encoder, patterns) == [encoder[0], patterns[1]]


def test_a_pattern_entity_replaces_the_encoder_entities_it_contains():
    encoder = [{"start": 0, "end": 4, "label": "ORG"}, {"start": 10, "end": 13, "label": "MISC"}]
    money = {"start": 6, "end": 13, "label": "MONEY"}  # "250 EUR" around the encoder's "EUR"
    same_span = {"start": 0, "end": 4, "label": "PRODUCT"}
    assert merge(encoder, [money, same_span]) == [encoder[0], money]


@pytest.mark.parametrize(("text", "language"), [
    ("Terrible support from Acme Holdings Inc., my laptop broke again and nobody answers.", "en"),
    ("Der Kunde ist sehr unzufrieden mit der Lieferung.", "de"),
    ("El pedido llegó tarde y la caja estaba rota.", "es"),
    ("De bestelling kwam veel te laat aan bij de klant.", "nl"),
    ("这是一个关于客户服务的测试句子", "zh"),
    ("meh", UNDETERMINED),
    ("شكرا", "ar"),  # 0.31 confidence, but no Latin letters: never undetermined, so never sent to the English models
])
def test_language_detection(text, language):
    assert detect(text) == language


def test_a_latin_text_is_unsupported_only_when_its_language_is_clear():
    covered = {"en", "de", "es", "nl", "fr", "it", "pt"}
    # Nigerian Pidgin at 0.71: an English headline (CoNLL val); the service routes it to the default language
    assert detect("Nigerian thieves hire police truck to carry loot .", covered=covered) == UNDETERMINED
    assert detect("Nigerian thieves hire police truck to carry loot .") == "pcm"
    assert detect("这是一个关于客户服务的测试句子", covered=covered) == "zh"


def test_plan_routes_by_language():
    languages = Languages(frozenset({"en", "de"}), frozenset({"en", "fr"}))
    texts, status, detected = plan({"text": {"a": "这是一个关于客户服务的测试句子"}}, 1000, languages)
    assert (texts, status, detected) == ({}, "unsupported_language", {"a": "zh"})
    texts, status, detected = plan({"text": {"a": "meh", "b": "这是一个关于客户服务的测试句子"}}, 1000, languages)
    # an undetermined text goes to the default language's models; the Chinese one is not guessed at
    assert (texts, status, detected) == ({"a": "meh"}, "partial", {"a": UNDETERMINED, "b": "zh"})
    assert languages.supported("fr") and languages.supported(UNDETERMINED) and not languages.supported("ja")


def test_pii_is_masked():
    text = ("Mail jane.doe+x@example.co.uk, call +1 (415) 555-0134 or 030 1234 5678, card 4111 1111 1111 1111, "
            "IBAN DE89 3704 0044 0532 0130 00, account no. 12345678. Paid $999 on 2024-05-01, up 12%.")
    masked = mask(text)
    for secret in ("jane.doe", "555-0134", "1234 5678", "4111", "DE89", "12345678"):
        assert secret not in masked
    for kept in ("$999", "2024-05-01", "12%", "[EMAIL]", "[PHONE]", "[CARD]", "[ACCOUNT]"):
        assert kept in masked


def test_plan_passes_through_what_it_cannot_enrich():
    assert plan({"text": {}}, 100)[:2] == ({}, "empty")
    assert plan({"text": {"a": "   "}}, 100)[:2] == ({}, "empty")
    assert plan({"text": {"a": "x" * 101}}, 100)[:2] == ({}, "too_large")
    assert plan({"text": {"a": "\x00\x01\x02binary"}}, 100)[:2] == ({}, "not_text")
    assert plan({"text": {"a": "fine", "b": "y" * 101}}, 100)[:2] == ({"a": "fine"}, "partial")
    assert looks_like_text("Line one\nline two\ttab") and not looks_like_text("\ufffd\ufffd\ufffdab")
