"""The enrichment models, offline (nothing is downloaded at run time).

- `text` (the default): the fine-tuned multitask encoder (CoNLL entities PERSON/ORG/LOCATION/MISC and 3-class
  sentiment with a binary polarity, `transformer.py`) plus the patterns for what CoNLL does not label (MONEY, PERCENT,
  DATE, PRODUCT, `ner.py`). Every entity names the model that found it.
- `rules-ner` and `vader`: the previous rules and VADER, kept as the measured baseline (`enrich.evaluation`).

Imports are lazy so that the training and evaluation tools load only what they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

# labels the patterns keep beside the encoder: the ones CoNLL-2003 does not annotate
PATTERN_LABELS = frozenset({"MONEY", "PERCENT", "DATE", "PRODUCT"})


@dataclass(frozen=True)
class ModelRef:
    task: str
    name: str
    version: str


class TextModel:
    """Encoder plus patterns: `prepare`/`finish` around the encoder, so a remote encoder (Triton) gives the same
    results as the in-process one (`predict`)."""

    def __init__(self, session: bool = True):
        from .ner import PatternGazetteerNER
        from .transformer import MultitaskModel

        self.encoder = MultitaskModel(session=session)
        self.patterns = PatternGazetteerNER(labels=PATTERN_LABELS)
        self.refs = [ModelRef("ner", self.encoder.name, self.encoder.version),
                     ModelRef("sentiment", self.encoder.name, self.encoder.version),
                     ModelRef("ner", self.patterns.name, self.patterns.version)]
        self.languages = self.encoder.languages

    def prepare(self, texts: list[str]):
        return self.encoder.prepare(texts)

    def finish(self, texts: list[str], prepared, token_logits, sentiment_logits) -> list[dict]:
        results = self.encoder.finish(texts, prepared, token_logits, sentiment_logits)
        for text, result in zip(texts, results, strict=True):
            result["entities"] = merge(result["entities"], self.patterns.entities(text))
        return results

    def predict(self, texts: list[str]) -> list[dict]:
        prepared = self.prepare(texts)
        return self.finish(texts, prepared, *self.encoder.run(prepared))


def merge(model_entities: list[dict], pattern_entities: list[dict]) -> list[dict]:
    """The encoder's entities, plus pattern entities that overlap none of them. A pattern entity that strictly
    contains the encoder's entities replaces them: in "250 EUR" the encoder tags the currency as MISC (CoNLL's
    habit), the amount with its currency is the MONEY."""
    out = list(model_entities)
    for p in pattern_entities:
        hit = [e for e in model_entities if p["start"] < e["end"] and e["start"] < p["end"]]
        if all(p["start"] <= e["start"] and e["end"] <= p["end"] and p["end"] - p["start"] > e["end"] - e["start"]
               for e in hit):
            out = [e for e in out if e not in hit] + [p]
    out.sort(key=lambda e: e["start"])
    return out


@cache
def get_model(name: str):
    """One instance per process."""
    if name == "text":
        return TextModel()
    if name == "rules-ner":
        from .ner import PatternGazetteerNER
        return PatternGazetteerNER()
    if name == "vader":
        from .sentiment import VaderSentiment
        return VaderSentiment()
    raise KeyError(f"unknown model {name!r}")
