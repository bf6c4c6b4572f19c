"""Language of each text with py3langid (its model ships inside the wheel: nothing is downloaded).

A detection below `min_confidence` (normalised probability; typical of texts of a few words such as "meh") is
reported as `und` (undetermined) and routed to the default language's models instead of a guessed language.
"""

from __future__ import annotations

from functools import cache

UNDETERMINED = "und"


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str, min_confidence: float = 0.5) -> str:
    language, probability = _identifier().classify(text)
    return language if probability >= min_confidence else UNDETERMINED
