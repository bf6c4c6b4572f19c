"""Turns an enriched event into its contextualized counterpart, in tiers, each record saying which (`outcome`):

- `skipped`: an event without text has nothing to ground; no retrieval is run;
- `retrieval_only`: every text event gets its cited passages, the regulatory note and risk flags derived from them,
  and a summary that quotes the best passage (no model);
- `generated`: events selected for the LLM (risk-flagged, strongly negative, or of a type the tenant lists in
  `RAG_GENERATE_TYPES`) get a generated, grounded summary, unless they are older than the freshness target when
  their turn comes: then they go out `retrieval_only` with that reason, so the stream never queues behind the
  model. A generation that fails (the LLM down) or takes longer than `generation_timeout_s` also leaves its event
  `retrieval_only`, with the reason: an LLM outage degrades the context, it does not send events to the DLQ. With
  `generation_concurrency` > 1 (a server that batches requests) the batch's selected events that are fresh at its
  start are generated that many at a time while its records are handled in order.
  Refusals (nothing relevant retrieved) are `retrieval_only` with `grounded` false."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from platform_common.llm import LLMError

from .generation import Generator
from .grounding import strip_ungrounded
from .prompts import load_prompt
from .retrieval import Hit, Retriever
from .store import Filters

NO_CONTEXT = "no grounded context"
GROUNDING = Counter("rag_grounding_total", "Outcome of grounding checks",
                    ["outcome"])  # grounded, refused (nothing relevant), repaired (numbers stripped), fallback
OUTCOMES = Counter("rag_contextualized_total", "Contextualized events by tier and reason", ["outcome", "reason"])
GENERATION_FAILED = Counter("rag_generation_failures_total",
                            "Selected events left retrieval-only because the generation failed", ["error"])

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


def has_text(event: dict) -> bool:
    return any(v and v.strip() for v in (event.get("text") or {}).values())


def age_seconds(event: dict, now: datetime) -> float:
    """Time since the event was enriched (the Avro decoder gives a datetime, raw dicts may carry millis)."""
    at = event.get("enriched_at") or event.get("received_at")
    if at is None:
        return 0.0
    if not isinstance(at, datetime):
        at = datetime.fromtimestamp(at / 1000, UTC)
    return (now - at).total_seconds()


def _filters(event: dict) -> Filters:
    return Filters(tenant=event.get("tenant") or "default", sector=(event.get("attributes") or {}).get("sector"))


def _retrieval_key(event: dict) -> tuple:
    # the same event id may come from two tenants: the tenant is part of what was retrieved for
    return event.get("tenant") or "default", event["event_id"], event_query(event)


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
    def __init__(self, retriever: Retriever, generator: Generator, min_score: float, top_k: int,
                 generate_types: dict[str, list[str]] | None = None, freshness_s: float = 5.0,
                 concurrency: int = 4, generation_timeout_s: float = 20.0, generation_concurrency: int = 1):
        self.retriever = retriever
        self.generator = generator
        self.min_score = min_score
        self.top_k = top_k
        self.generate_types = generate_types or {}
        self.freshness_s = freshness_s
        self.generation_timeout_s = generation_timeout_s
        self.generation_concurrency = generation_concurrency
        self._generating: dict[tuple, asyncio.Future[str]] = {}  # a batch's summaries, started by `prepare`
        self.concurrency = concurrency
        self._retrieved: dict[tuple, list[Hit]] = {}  # a batch's hits, retrieved ahead by `prepare`
        self.prompt = load_prompt("category_summary.v1")

    async def prepare(self, events: list[dict]) -> None:
        """Retrieves for a whole batch ahead of its records: the queries embedded in one call (`Embedder.prime`),
        then searched `concurrency` at a time; each record then takes its hits (or searches again if missing)."""
        texts = [e for e in events if has_text(e)]
        await self.retriever.embedder.prime([event_query(e) for e in texts])
        limit = asyncio.Semaphore(self.concurrency)

        async def retrieve(event: dict) -> None:
            async with limit:
                self._retrieved[_retrieval_key(event)] = await self.relevant(event_query(event), _filters(event))
        self._retrieved.clear()
        await asyncio.gather(*(retrieve(e) for e in texts))
        for left in self._generating.values():  # a failed batch's
            left.cancel()
        self._generating.clear()
        if self.generation_concurrency > 1:
            gate, now = asyncio.Semaphore(self.generation_concurrency), datetime.now(UTC)
            for event in texts:
                key = _retrieval_key(event)
                hits = self._retrieved.get(key)
                fresh = age_seconds(event, now) <= self.freshness_s
                if hits and fresh and self.selected(event, risk_flags(event, hits)):
                    self._generating[key] = asyncio.ensure_future(self._gated(gate, event, hits[:PASSAGES_IN_PROMPT]))

    async def _gated(self, gate: asyncio.Semaphore, event: dict, used: list[Hit]) -> str:
        async with gate:
            return await asyncio.wait_for(self.summary(event, used), self.generation_timeout_s)

    def selected(self, event: dict, flags: list[tuple[str, list[str]]]) -> str | None:
        """Why the event deserves a generated summary, or None."""
        if flags:
            return f"risk: {', '.join(f for f, _ in flags)}"
        tenant = event.get("tenant") or "default"
        if event.get("type") in {*self.generate_types.get(tenant, ()), *self.generate_types.get("*", ())}:
            return f"type: {event.get('type')}"
        return None

    async def relevant(self, query: str, filters: Filters) -> list[Hit]:
        return (await self.retriever.search(query, filters, k=self.top_k)).grounding(self.min_score)

    async def contextualize(self, event: dict) -> dict:
        out: dict[str, Any] = {k: event[k] for k in ("event_id", "source", "type", "stream_id", "occurred_at")}
        out |= {"tenant": event.get("tenant") or "default", "text": dict(event.get("text") or {}), "model": "",
                "prompt_version": "", "index_version": self.retriever.indexer.index.version,
                "generated_at": datetime.now(UTC)}
        if not has_text(event):
            return _outcome(out | {"grounded": False, "category_summary": NO_CONTEXT, "regulatory_note": NO_CONTEXT,
                                   "risk_flags": [], "citations": [], "statements": []}, "skipped", "no text")
        query = event_query(event)
        started = self._generating.pop(_retrieval_key(event), None)  # its summary, if `prepare` started it
        hits = self._retrieved.pop(_retrieval_key(event), None)
        if hits is None:
            hits = await self.relevant(query, _filters(event))
        if not hits:
            GROUNDING.labels("refused").inc()
            return _outcome(out | {"grounded": False, "category_summary": NO_CONTEXT, "regulatory_note": NO_CONTEXT,
                                   "risk_flags": [], "citations": [], "statements": []},
                            "retrieval_only", "no relevant passage")
        used = hits[:PASSAGES_IN_PROMPT]
        flags = risk_flags(event, hits)
        why = self.selected(event, flags)
        age = age_seconds(event, datetime.now(UTC))
        if why is None:
            summary, outcome, reason = _first_sentence(used[0].text), "retrieval_only", "not selected for generation"
        elif started is None and age > self.freshness_s:
            summary, outcome = _first_sentence(used[0].text), "retrieval_only"
            reason = f"selected ({why}) but {age:.1f}s old, past the {self.freshness_s:g}s freshness target"
        else:
            try:
                summary = await (started if started is not None
                                 else asyncio.wait_for(self.summary(event, used), self.generation_timeout_s))
                outcome, reason = "generated", why
                out |= {"model": self.generator.model, "prompt_version": self.prompt.version}
            except (LLMError, TimeoutError) as e:
                GENERATION_FAILED.labels(type(e).__name__).inc()
                summary, outcome = _first_sentence(used[0].text), "retrieval_only"
                reason = f"selected ({why}) but the generation failed: {type(e).__name__}"
        note, note_support = regulatory_note(hits, query)
        statements = [{"kind": "category_summary", "text": summary, "chunk_ids": [h.chunk_id for h in used]},
                      {"kind": "regulatory_note", "text": note, "chunk_ids": note_support},
                      *({"kind": "risk_flag", "text": f, "chunk_ids": ids} for f, ids in flags)]
        cited = {cid for s in statements for cid in s["chunk_ids"]}
        return _outcome(out | {"grounded": True, "category_summary": summary, "regulatory_note": note,
                               "risk_flags": [f for f, _ in flags], "statements": statements,
                               "citations": [h.citation() for h in hits if h.chunk_id in cited]}, outcome, reason)

    async def summary(self, event: dict, used: list[Hit]) -> str:
        event_text = event_query(event)
        text = await self.generator.generate(self.prompt, passages=format_passages(used), event=event_text)
        return grounded_text(text, used, event_text)


def grounded_text(generated: str, used: list[Hit], given: str) -> str:
    """The check every generated text passes (contextualized events and /v1/query answers): sentences stating a
    number that neither the prompt's passages (`used`) nor the caller's text (`given`) hold are removed; when nothing
    usable is left, the best passage is quoted instead of inventing."""
    text, repaired = strip_ungrounded(generated, [format_passages(used), given])
    if len(text) < 12:
        GROUNDING.labels("fallback").inc()
        return _first_sentence(used[0].text)
    GROUNDING.labels("repaired" if repaired else "grounded").inc()
    return text


def _outcome(out: dict, outcome: str, reason: str) -> dict:
    OUTCOMES.labels(outcome, reason.split(":")[0].split(" (")[0]).inc()
    return out | {"outcome": outcome, "outcome_reason": reason}
