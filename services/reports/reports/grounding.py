"""The narrative guardrail. The model writes references to the report's figures ({k3}, {a1}), never numbers; code
fills in each figure's value with its unit. A sentence is kept only when:

- every reference is a figure of the report, and it cites at least one: a claim without a figure cannot be checked
  against the data, so it is removed (report text never grounds anything, and passages hold no figure of the period);
- it writes no number of its own (names that contain digits and the period's dates aside);
- the clause around each reference names only that figure's stream, source, metric and statistic: two swapped
  values, a figure put on the wrong stream, a mean called a maximum are all refused;
- no unit follows a reference except the noun of a count ("{k1} events"): the unit comes with the value;
- every name that looks like an id (pump-9, line_2) is a stream, source or metric of the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

REF = re.compile(r"\{\s*([ka]\d+)\s*\}")
NUMBER = re.compile(r"(?:(?<![\w.])[-+−])?(?<![\d.])\d[\d,]*(?:\.\d+)?%?")
_ID_LIKE = re.compile(r"(?<![\w-])[A-Za-z][\w]*[-_][\w-]*\d[\w-]*|(?<![\w-])[A-Za-z]+\d+\w*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_UNIT_AFTER = re.compile(r"^\s*(%|per\s*cent|percent|percentage points?|ms|milliseconds?|seconds?|s|minutes?|hours?|"
                         r"days?|degrees?|°c?|kg|km|eur|usd|gbp|units?|times|x|events?|alerts?|anomal(?:y|ies)|"
                         r"readings?|requests?)(?!\w)", re.I)
# what a count may be followed by: its own noun
_COUNT_NOUNS = {"event_count": {"event", "events", "readings", "reading"},
                "events_by_source": {"event", "events", "readings", "reading"},
                "anomaly_count": {"anomaly", "anomalies", "alert", "alerts"}}
# words that say which statistic a clause is about, and the figure kinds they fit
_STATISTICS = [(re.compile(r"\b(mean|average|avg|typical)\b", re.I), {"metric_mean"}),
               (re.compile(r"\b(highest|maximum|max|peak(?:ed)?)\b", re.I), {"metric_max", "anomaly"}),
               (re.compile(r"\b(share|percent|percentage|proportion|negative)\b", re.I), {"negative_share"})]


@dataclass
class Checked:
    sentence: str  # as the model wrote it
    text: str = ""  # with the figures filled in
    segments: list[dict] = field(default_factory=list)  # {text} and {text, ref} parts of `text`
    figures: dict[str, str] = field(default_factory=dict)  # value as shown -> figure id
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def numbers_in(text: str) -> list[str]:
    return [m.group() for m in NUMBER.finditer(text)]


def _named(names: Iterable[str], text: str) -> set[str]:
    return {n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text, re.I)}


class Guard:
    def __init__(self, figures: list[dict], period: tuple[datetime, datetime]):
        self.figures = {f["id"]: f for f in figures}
        self.streams = {f["stream"] for f in figures if f.get("stream")}
        self.sources = {f["source"] for f in figures if f.get("source")}
        self.metrics = {f["metric"] for f in figures if f.get("metric")}
        # longest first, so "pump-12" is masked before "pump-1"
        self.names = sorted(self.streams | self.sources | self.metrics, key=len, reverse=True)
        self.dates = [d.strftime(fmt) for d in period for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%H:%M")]

    def check(self, sentence: str) -> Checked:
        result = Checked(sentence)
        refs = list(REF.finditer(sentence))
        unknown = [m.group(1) for m in refs if m.group(1) not in self.figures]
        if unknown:
            result.problems.append(f"cites figures the report does not have: {', '.join(unknown)}")
        if not refs:
            result.problems.append("states no figure: a claim that cannot be checked against the data")
        masked = REF.sub(" ", sentence)
        for name in self.names:
            masked = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", " ", masked, flags=re.I)
        strangers = _ID_LIKE.findall(masked)
        if strangers:
            result.problems.append(f"names what the report does not hold: {', '.join(strangers)}")
            masked = _ID_LIKE.sub(" ", masked)
        for date in self.dates:
            masked = masked.replace(date, " ")
        if numbers := numbers_in(masked):
            result.problems.append(f"writes numbers of its own: {', '.join(numbers)}")
        for i, m in enumerate(refs):
            figure = self.figures.get(m.group(1))
            if figure is not None:
                after = sentence[m.end():refs[i + 1].start() if i + 1 < len(refs) else len(sentence)]
                before = sentence[refs[i - 1].end() if i else 0:m.start()]
                result.problems += self._clause_problems(figure, before, after)
        if result.ok:
            self._fill(result, refs)
        return result

    def _clause_problems(self, figure: dict, before: str, after: str) -> list[str]:
        """A reference's clause is the text since the previous reference, or, when that says nothing about what the
        figure is, the text up to the next one ("{k3} was the mean temperature on pump-7")."""
        about = before if self._describes(before) else after
        problems = []
        for names, own, what in ((self.streams, figure.get("stream"), "stream"),
                                 (self.sources, figure.get("source"), "source"),
                                 (self.metrics, figure.get("metric"), "metric")):
            if wrong := sorted(_named(names, about) - {own}):
                problems.append(f"{{{figure['id']}}} ({figure['label']}) is put on the {what} {', '.join(wrong)}")
        for pattern, kinds in _STATISTICS:
            word = pattern.search(about)
            if word and figure["kind"] not in kinds:
                problems.append(f"{{{figure['id']}}} ({figure['label']}) is called a {word.group(0).lower()}")
        unit = _UNIT_AFTER.match(after)
        if unit and unit.group(1).lower() not in _COUNT_NOUNS.get(figure["kind"], set()):
            problems.append(f"{{{figure['id']}}} ({figure['label']}) is given the unit {unit.group(1)!r}")
        return problems

    def _describes(self, text: str) -> bool:
        return bool(_named(self.names, text)) or any(p.search(text) for p, _ in _STATISTICS)

    def _fill(self, result: Checked, refs: list[re.Match[str]]) -> None:
        at, parts = 0, []
        for m in refs:
            figure = self.figures[m.group(1)]
            parts += [{"text": result.sentence[at:m.start()]}, {"text": figure["display"], "ref": figure["id"]}]
            result.figures[figure["display"]] = figure["id"]
            at = m.end()
        parts.append({"text": result.sentence[at:]})
        result.segments = [p for p in parts if p["text"]]
        result.text = "".join(p["text"] for p in result.segments)
