"""The numeric grounding guardrail: every number in the narrative must be one of the report's figures (a KPI, an
anomaly) or appear in a cited passage.

A number "matches" a figure when it is that figure rounded to the number of decimals the sentence uses, so
"about 42.4" is grounded by 42.37 but "43" is not. Names that contain digits (stream ids, sources, metrics) and the
dates of the period are not figures and are masked before numbers are read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

# a sign counts only where it is not a hyphen inside a name ("pump-7" holds 7, not -7)
NUMBER = re.compile(r"(?:(?<![\w.])[-+−])?(?<![\d.])\d[\d,]*(?:\.\d+)?%?")
_WORD = re.compile(r"[a-z][a-z0-9-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Source:
    """Where a grounded number came from: a figure of the report, or a cited passage."""
    ref: str  # figure id (k3, a1) or chunk id
    kind: str  # "figure" or "passage"
    values: list[float]
    label: str = ""


@dataclass
class Checked:
    sentence: str
    grounded: dict[str, str] = field(default_factory=dict)  # number as written -> ref
    ungrounded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.ungrounded


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def parse_number(token: str) -> tuple[float, int]:
    """The value and the number of decimals written."""
    token = token.replace("−", "-").replace(",", "").rstrip("%")
    decimals = len(token.split(".")[1]) if "." in token else 0
    return float(token), decimals


def numbers_in(text: str) -> list[str]:
    return [m.group() for m in NUMBER.finditer(text)]


def passage_sources(passages: list[dict]) -> list[Source]:
    return [Source(p["chunk_id"], "passage", [parse_number(n)[0] for n in numbers_in(p.get("text", ""))],
                   p.get("title", "")) for p in passages]


def figure_sources(figures: list[dict]) -> list[Source]:
    return [Source(f["id"], "figure", [f["value"], *(f[k] for k in ("score", "threshold") if k in f)], f["label"])
            for f in figures]


class Guard:
    def __init__(self, sources: list[Source], names: Sequence[str | None], period: tuple[datetime, datetime]):
        self.sources = sources
        # longest first, so "pump-12" is masked before "pump-1"
        self.names = sorted({n for n in names if n and re.search(r"\d", n)}, key=len, reverse=True)
        self.date_parts = {float(v) for d in period for v in (d.year, d.month, d.day)}
        self.date_patterns = [d.strftime(fmt) for d in period for fmt in ("%Y-%m-%d", "%H:%M", "%d/%m/%Y")]

    def _mask(self, sentence: str) -> str:
        for name in [*self.names, *self.date_patterns]:
            sentence = sentence.replace(name, " ")
        return sentence

    def check(self, sentence: str) -> Checked:
        result = Checked(sentence)
        for token in numbers_in(self._mask(sentence)):
            ref = self.ground(token, sentence)
            if ref is None:
                result.ungrounded.append(token)
            else:
                result.grounded[token] = ref
        return result

    def ground(self, token: str, sentence: str = "") -> str | None:
        """The source of `token`; when several hold it, the one whose label shares most words with the sentence
        (97.5 in a sentence about an anomaly is the anomaly, not the period's maximum)."""
        value, decimals = parse_number(token)
        tolerance = 0.5 * 10 ** -decimals + 1e-9
        # an unsigned number may state a negative figure's size ("fell by 5")
        candidates = [value] if token[0] in "-+−" else [value, -value]
        matches = [s for s in self.sources if any(abs(v - c) <= tolerance for v in s.values for c in candidates)]
        if matches:
            words = set(_WORD.findall(sentence.lower()))
            return max(matches, key=lambda s: len(words & set(_WORD.findall(s.label.lower())))).ref
        if decimals == 0 and not token.endswith("%") and value in self.date_parts:
            return "period"
        return None
