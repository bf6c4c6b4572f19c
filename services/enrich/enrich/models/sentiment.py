"""Sentiment with VADER (lexicon shipped in the vaderSentiment wheel), mapped to label x intensity."""

from __future__ import annotations

from importlib.metadata import version

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# VADER's own recommended cut-offs for the compound score
NEUTRAL_BAND = 0.05
# |compound| below MEDIUM is low intensity, below HIGH medium, else high
MEDIUM, HIGH = 0.35, 0.65
MAPPING_REVISION = "1"


class VaderSentiment:
    task = "sentiment"
    name = "vader"

    def __init__(self) -> None:
        self.version = f"{version('vaderSentiment')}+map{MAPPING_REVISION}"
        self._analyzer = SentimentIntensityAnalyzer()

    def predict(self, texts: list[str]) -> list[dict]:
        return [self.classify(self._analyzer.polarity_scores(t)["compound"]) for t in texts]

    @staticmethod
    def classify(compound: float) -> dict:
        if compound >= NEUTRAL_BAND:
            label = "positive"
        elif compound <= -NEUTRAL_BAND:
            label = "negative"
        else:
            return {"label": "neutral", "intensity": "low", "score": compound}
        strength = abs(compound)
        intensity = "low" if strength < MEDIUM else "medium" if strength < HIGH else "high"
        return {"label": label, "intensity": intensity, "score": compound}
