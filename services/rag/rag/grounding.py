"""Checks that generated text states no number absent from its sources, and strips what does."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+(?=\s|$)|$)")


def numbers(text: str) -> set[str]:
    # "1,000" and "1000" are the same figure; a trailing ".0" is not a new one
    return {re.sub(r"\.0+$", "", n.replace(",", "")) for n in _NUMBER.findall(text)}


def ungrounded_numbers(generated: str, sources: list[str]) -> set[str]:
    allowed = set().union(*(numbers(s) for s in sources)) if sources else set()
    return numbers(generated) - allowed


def strip_ungrounded(generated: str, sources: list[str]) -> tuple[str, bool]:
    """Drops every sentence holding a number that is in no source; returns the text and whether it changed."""
    if not ungrounded_numbers(generated, sources):
        return generated, False
    kept = [s.strip() for s in _SENTENCE.findall(generated) if s.strip() and not ungrounded_numbers(s, sources)]
    return " ".join(kept), True
