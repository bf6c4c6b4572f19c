"""Language of each text with py3langid (its model ships inside the wheel: nothing is downloaded).

A Latin-script text detected below `min_confidence` (normalised probability; typical of texts of a few words such as
"meh") is reported as `und` (undetermined) and routed to the default language's models instead of a guessed language;
so is a Latin-script text whose detected language has no model unless that detection reaches
`unsupported_confidence` (English headlines in capitals or lists of names are often taken for another language with
middling confidence, and would otherwise be passed through as `unsupported_language`). A text mostly in another
script keeps its detected language whatever the confidence: the script alone rules out the Latin-script languages the
models cover (an Arabic tweet is not sent to the English models). Both thresholds were chosen on the validation
splits (`python -m enrich.evaluation --routing 0.5 0.7 0.8 0.9 0.95`): 0.5 and 0.9.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from functools import cache

UNDETERMINED = "und"
MIN_CONFIDENCE = 0.5
UNSUPPORTED_CONFIDENCE = 0.9


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def latin_script(text: str) -> bool:
    """At least half of the letters are Latin (a text without letters counts as Latin)."""
    letters = [c for c in text if c.isalpha()]
    latin = sum(1 for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN"))
    return latin * 2 >= len(letters)


def classify(text: str) -> tuple[str, float]:
    language, probability = _identifier().classify(text)
    return language, float(probability)


def decide(language: str, probability: float, latin: bool, min_confidence: float = MIN_CONFIDENCE,
           covered: Collection[str] | None = None, unsupported_confidence: float = UNSUPPORTED_CONFIDENCE) -> str:
    if not latin:
        return language
    if probability < min_confidence:
        return UNDETERMINED
    if covered is not None and language not in covered and probability < unsupported_confidence:
        return UNDETERMINED
    return language


def detect(text: str, min_confidence: float = MIN_CONFIDENCE, covered: Collection[str] | None = None,
           unsupported_confidence: float = UNSUPPORTED_CONFIDENCE) -> str:
    """The text's language, or `und`; `covered`: the languages some model covers (see the module's docstring)."""
    return decide(*classify(text), latin_script(text), min_confidence, covered, unsupported_confidence)
