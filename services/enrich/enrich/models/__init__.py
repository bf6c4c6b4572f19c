"""The enrichment models, pure Python and offline: what the `local` backend runs in-process and the V2 runtime serves.

Every model has `task`, `name`, `version` and `predict(texts) -> list[dict]` (one JSON-able dict per text), so both
backends return the same values.
"""

from __future__ import annotations

from functools import cache
from typing import Protocol

from .ner import PatternGazetteerNER
from .sentiment import VaderSentiment


class Model(Protocol):
    task: str
    name: str
    version: str

    def predict(self, texts: list[str]) -> list[dict]: ...


@cache
def get_model(task: str) -> Model:
    """One instance per process: loading the lexicon and compiling the gazetteer take a moment."""
    if task == "sentiment":
        return VaderSentiment()
    if task == "ner":
        return PatternGazetteerNER()
    raise KeyError(f"unknown model task {task!r}")


TASKS = ("sentiment", "ner")
