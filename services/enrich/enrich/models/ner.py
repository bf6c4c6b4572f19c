"""Named entities from patterns (money, percentages, dates/times, titled names, company suffixes) and gazetteers
(organisations, products, locations, first names), matched on the original text so offsets index it as is.

Overlaps resolve to the longest match, then the most confident one. Its measured precision and recall per label are
computed by services/enrich/tests/test_ner_quality.py on the labelled sample kept there.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

GAZETTEERS = Path(__file__).with_name("gazetteers.json")
RULES_REVISION = "1"

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
          r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_WEEKDAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SCALE = r"(?:\s?(?:thousand|million|billion|trillion|bn|[kKmMbB])\b)?"
_TIME = (r"\d{1,2}:\d{2}(?::\d{2})?(?:\s?(?:[aApP]\.?[mM]\.?))?(?:\s?(?:UTC|GMT|CET|EST|PST))?"
         r"|\d{1,2}\s?(?:am|pm|a\.m\.|p\.m\.)")

# (label, confidence, pattern): patterns are precise, so they outrank gazetteer hits of equal length
PATTERNS: list[tuple[str, float, str]] = [
    ("MONEY", 0.95, rf"(?:US)?[$€£¥]\s?(?:{_NUM}){_SCALE}"),
    ("MONEY", 0.9, rf"\b(?:{_NUM}){_SCALE}\s?(?:USD|EUR|GBP|JPY|CHF|dollars|euros|pounds|yen)\b"),
    ("PERCENT", 0.97, rf"(?<![\w.])(?:{_NUM})\s?(?:%|percent\b|per cent\b|percentage points\b)"),
    ("DATE", 0.95, r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
    ("DATE", 0.85, r"\b\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})\b"),
    ("DATE", 0.9, rf"\b(?:{_WEEKDAY},?\s+)?{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
                  rf"(?:,?\s+(?:at\s+)?(?:{_TIME}))?\b"),
    ("DATE", 0.9, rf"\b(?:{_WEEKDAY},?\s+)?\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:\s+\d{{4}})?\b"),
    ("DATE", 0.85, rf"\b{_MONTH}\s+\d{{4}}\b"),
    ("DATE", 0.85, r"\bQ[1-4]\s+\d{4}\b|\b(?:early|mid|late)-?\d{4}\b|\bH[12]\s+\d{4}\b"),
    ("DATE", 0.8, rf"\b(?:(?:last|next|this)\s+(?:week|month|year|quarter|{_WEEKDAY})"
                  r"|yesterday|today|tomorrow|tonight)\b"),
    ("DATE", 0.8, rf"\b{_WEEKDAY}(?:\s+(?:morning|afternoon|evening|night))?\b"),
    ("DATE", 0.85, rf"\b(?:{_TIME})(?=\W|$)"),
    ("DATE", 0.75, r"\b(?:in|since|until|by|from|during)\s+(?P<year>(?:19|20)\d{2})\b"),
    ("PERSON", 0.85, r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sir|Dame)\.?\s+[A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'-]+)?"),
    ("ORG", 0.8, (r"\b(?:[A-Z][A-Za-z0-9&'-]*\s+){0,3}[A-Z][A-Za-z0-9&'-]*,?\s+(?:Inc|Corp|Corporation|Ltd|LLC|GmbH|AG|"
                  r"plc|SA|S\.A|NV|Holdings|Group|Bank|Labs|Technologies|Systems)\b\.?")),
]
_GAZETTEER_CONFIDENCE = {"ORG": 0.9, "PRODUCT": 0.85, "LOCATION": 0.85}
_PERSON_CONFIDENCE = 0.8


def _alternation(names: list[str]) -> str:
    # longest first, so "New York City" wins over "New York" inside one alternation
    return "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))


class PatternGazetteerNER:
    task = "ner"
    name = "pattern-gazetteer-ner"

    def __init__(self, gazetteers: Path = GAZETTEERS, labels: frozenset[str] | None = None) -> None:
        """`labels`: keep only rules of these labels (beside the encoder, only what CoNLL does not annotate)."""
        raw = gazetteers.read_bytes()
        self.version = f"{RULES_REVISION}+{hashlib.sha256(raw).hexdigest()[:8]}"
        lists: dict[str, list[str]] = json.loads(raw)
        self._rules: list[tuple[str, float, re.Pattern[str]]] = [
            (label, conf, re.compile(p)) for label, conf, p in PATTERNS]
        for label, conf in _GAZETTEER_CONFIDENCE.items():
            self._rules.append((label, conf, re.compile(rf"(?<![\w-])(?:{_alternation(lists[label])})(?![\w-])")))
        # a known first name followed by one or two capitalised words
        self._rules.append(("PERSON", _PERSON_CONFIDENCE, re.compile(
            rf"(?<![\w-])(?:{_alternation(lists['PERSON_FIRST'])})(?:\s+(?:van|von|de|da|del|di|le|la)?\s?[A-Z][a-zA-Z'-]+){{1,2}}"
            rf"(?![\w-])")))
        if labels is not None:
            self._rules = [r for r in self._rules if r[0] in labels]
        self._org_product = set(lists["ORG"]) | set(lists["PRODUCT"]) | set(lists["LOCATION"])

    def predict(self, texts: list[str]) -> list[dict]:
        return [{"entities": self.entities(t)} for t in texts]

    def entities(self, text: str) -> list[dict]:
        candidates = []
        for label, conf, rx in self._rules:
            for m in rx.finditer(text):
                start, end = m.span("year") if "year" in rx.groupindex else m.span()
                while end > start and text[end - 1] in " ,":
                    end -= 1
                if end > start:
                    candidates.append((start, end, label, conf))
        # longest span first, then the most confident; earlier rules win exact ties (sort is stable)
        candidates.sort(key=lambda c: (-(c[1] - c[0]), -c[3]))
        taken: list[tuple[int, int]] = []
        found: list[dict] = []
        for start, end, label, conf in candidates:
            if any(start < e and s < end for s, e in taken):
                continue
            if label == "PERSON" and self._swallows_known_name(text[start:end]):
                continue
            taken.append((start, end))
            found.append({"text": text[start:end], "label": label, "start": start, "end": end, "confidence": conf,
                          "model": self.name})
        found.sort(key=lambda e: e["start"])
        return found

    def _swallows_known_name(self, span: str) -> bool:
        """`Jordan Apple` or `Tim Paris` is more likely a name next to a known org/place than a person."""
        return any(word in self._org_product for word in span.split()[1:])
