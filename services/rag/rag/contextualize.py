"""Turns an enriched event into its contextualized counterpart: retrieve, refuse when nothing relevant, else
generate a grounded summary and derive the regulatory note and risk flags from the cited passages."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prometheus_client import Counter

from .generation import Generator
from .grounding import strip_ungrounded
from .prompts import load_prompt
from .retrieval import Hit, Retriever
from .store import Filters

NO_CONTEXT = "no grounded context"
GROUNDING = Counter("rag_grounding_total", "Outcome of grounding checks",
                    ["outcome"])  # grounded, refused (nothing relevant), repaired (numbers stripped), fallback

PASSAGES_IN_PROMPT = 2
PASSAGE_CHARS = 400
REGULATORY_TYPES = ("regulation", "policy", "guideline", "standard")
# flag -> words that raise it when they appear in the event and are backed by a cited passage
RISK_TERMS = {
    "fraud": ("fraud", "scam", "phishing", "unauthorised", "unauthorized", "chargeback"),
    "data_breach": ("breach", "leak", "leaked", "exposed", "compromised"),
    "service_outage": ("outage", "downtime", "unavailable", "down", "degraded"),
    "sanctions": ("sanction", "sanctions", "embargo"),
    "money_laundering": ("laundering", "aml", "structuring"),
    "consumer_harm": ("complaint", "complaints", "refund", "mis-selling", "misleading"),
    "safety": ("injury", "recall", "hazard", "unsafe"),
}
_WORD = re.compile(r"[a-z][a-z'-]+")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")


def event_query(event: dict) -> str:
    texts = " ".join(v for v in (event.get("text") or {}).values() if v)
    return f"{event.get('type', '')}: {texts}"[:1000]


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def format_passages(hits: list[Hit]) -> str:
    return "\n".join(f"[{i}] {h.title}: {h.text[:PASSAGE_CHARS]}" for i, h in enumerate(hits, 1))


def _first_sentence(text: str) -> str:
    match = _SENTENCE.match(text.strip())
    return (match.group() if match else text).strip()[:300]


def regulatory_note(hits: list[Hit], query: str) -> tuple[str, list[str]]:
    """The sentence of the best regulatory passage that shares most words with the event, quoted with its source."""
    regulatory = [h for h in hits if (h.doc_type or "").lower() in REGULATORY_TYPES] or hits
    best = regulatory[0]
    wanted = _words(query)
    sentences = [s.strip() for s in _SENTENCE.findall(best.text) if s.strip()] or [best.text]
    sentence = max(sentences, key=lambda s: len(_words(s) & wanted))
    return f"{best.title or best.source_uri}: {sentence[:300]}", [best.chunk_id]


def risk_flags(event: dict, hits: list[Hit]) -> list[tuple[str, list[str]]]:
    words = _words(event_query(event))
    flags = []
    for flag, terms in RISK_TERMS.items():
        if words & set(terms):
            support = [h.chunk_id for h in hits if _words(h.text) & set(terms)]
            if support:  # a flag only when a passage speaks of the same risk
                flags.append((flag, support))
    negative = [s for s in event.get("sentiment") or []
                if s.get("label") == "negative" and s.get("intensity") == "high"]
    if negative:
        flags.append(("strongly_negative_sentiment", [h.chunk_id for h in hits]))
    return flags


class Contextualizer:
    def __init__(self, retriever: Retriever, generator: Generator, min_score: float, top_k: int):
        self.retriever = retriever
        self.generator = generator
        self.min_score = min_score
        self.top_k = top_k
        self.prompt = load_prompt("category_summary.v1")

    async def relevant(self, query: str, filters: Filters) -> list[Hit]:
        return (await self.retriever.search(query, filters, k=self.top_k)).grounding(self.min_score)

    async def contextualize(self, event: dict) -> dict:
        query = event_query(event)
        sector = (event.get("attributes") or {}).get("sector")
        hits = await self.relevant(query, Filters(tenant=event.get("tenant") or "default", sector=sector))
        out = {k: event[k] for k in ("event_id", "source", "type", "stream_id", "occurred_at")}
        out |= {"tenant": event.get("tenant") or "default", "text": dict(event.get("text") or {}),
                "model": self.generator.model, "prompt_version": self.prompt.version,
                "index_version": self.retriever.indexer.index.version,
                "generated_at": datetime.now(UTC)}
        if not hits:
            GROUNDING.labels("refused").inc()
            return out | {"grounded": False, "category_summary": NO_CONTEXT, "regulatory_note": NO_CONTEXT,
                          "risk_flags": [], "citations": [], "statements": []}
        used = hits[:PASSAGES_IN_PROMPT]
        summary = await self.summary(event, used)
        note, note_support = regulatory_note(hits, query)
        flags = risk_flags(event, hits)
        statements = [{"kind": "category_summary", "text": summary, "chunk_ids": [h.chunk_id for h in used]},
                      {"kind": "regulatory_note", "text": note, "chunk_ids": note_support},
                      *({"kind": "risk_flag", "text": f, "chunk_ids": ids} for f, ids in flags)]
        cited = {cid for s in statements for cid in s["chunk_ids"]}
        return out | {"grounded": True, "category_summary": summary, "regulatory_note": note,
                      "risk_flags": [f for f, _ in flags], "statements": statements,
                      "citations": [h.citation() for h in hits if h.chunk_id in cited]}

    async def summary(self, event: dict, used: list[Hit]) -> str:
        passages = format_passages(used)
        event_text = event_query(event)
        text = await self.generator.generate(self.prompt, passages=passages, event=event_text)
        text, repaired = strip_ungrounded(text, [passages, event_text])
        if len(text) < 12:  # nothing usable left: quote the best passage instead of inventing
            GROUNDING.labels("fallback").inc()
            return _first_sentence(used[0].text)
        GROUNDING.labels("repaired" if repaired else "grounded").inc()
        return text
