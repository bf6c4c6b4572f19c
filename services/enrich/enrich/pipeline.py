"""One stream batch through the models: decode, decide what to enrich, infer, publish; or dead-letter.

Returns only when every output is acknowledged by Kafka; the stream (`platform_common.stream`) then commits the
batch's offsets, in the same transaction as the outputs by default. `event_id` is carried through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka.structs import ConsumerRecord

from platform_common.kafka import ENRICHED, RAW, Ack, Publisher, Refusals, dlq
from platform_common.kafka import dead_letter as write_dead_letter
from platform_common.tracing import process_span

from .client import ModelClient, ModelFailed, ModelUnavailable, model_client
from .language import UNDETERMINED, detect
from .metrics import EVENTS, STREAM_BATCH
from .models import TextModel
from .pii import mask
from .settings import EnrichSettings

log = logging.getLogger(__name__)


@dataclass
class Job:
    record: ConsumerRecord
    event: dict
    texts: dict[str, str]  # field -> text to enrich
    status: str
    languages: dict[str, str]  # field -> detected language (ISO 639-1, or "und")


@dataclass(frozen=True)
class Languages:
    """What the models cover: languages with an entity model, with a sentiment model, and the one undetermined
    texts go to."""
    ner: frozenset[str]
    sentiment: frozenset[str]
    default: str = "en"
    min_confidence: float = 0.5

    def route(self, language: str) -> str:
        return self.default if language == UNDETERMINED else language

    def supported(self, language: str) -> bool:
        language = self.route(language)
        return language in self.ner or language in self.sentiment


def plan(event: dict, max_chars: int, languages: Languages | None = None) -> tuple[dict[str, str], str, dict]:
    """Which text fields go to the models, the event's enrichment_status and each text's language. A text in a
    language no model covers is not enriched (`unsupported_language`): no model guesses at it."""
    texts, skipped, detected = {}, [], {}
    for field, text in (event.get("text") or {}).items():
        if not text.strip():
            continue
        if len(text) > max_chars:
            skipped.append("too_large")
        elif not looks_like_text(text):
            skipped.append("not_text")
        else:
            if languages is not None:
                detected[field] = detect(text, languages.min_confidence, languages.ner | languages.sentiment)
                if not languages.supported(detected[field]):
                    skipped.append("unsupported_language")
                    continue
            texts[field] = text
    if texts:
        return texts, "partial" if skipped else "ok", detected
    return texts, skipped[0] if skipped else "empty", detected


_ODD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def looks_like_text(text: str) -> bool:
    """Binary smuggled into a string (NULs, control characters, replacement characters) is not text."""
    return "\x00" not in text and len(_ODD.findall(text)) <= len(text) // 20


class Enricher:
    """`publisher` is the stream's (transactional under exactly-once): outputs and dead letters go through it."""

    def __init__(self, settings: EnrichSettings, group: str, publisher: Publisher):
        self.settings, self.group, self.publisher = settings, group, publisher
        self.refusals = Refusals(settings.consumer_max_attempts)
        self.model: ModelClient = model_client("text", settings.enrich_backend, settings)
        # the languages come from the model's artifact (what it was trained and measured on)
        covered = TextModel(session=False).languages
        self.languages = Languages(frozenset(covered["ner"]), frozenset(covered["sentiment"]),
                                   settings.enrich_default_language, settings.enrich_language_min_confidence)

    async def start(self) -> None:
        await self.model.start()

    async def stop(self) -> None:
        await self.model.close()

    async def handle(self, records: list[ConsumerRecord]) -> None:
        STREAM_BATCH.observe(len(records))
        jobs: list[Job] = []
        for record in records:
            if (refusal := self.refusals.given_up(record)) is not None:  # its output is too large to store
                await self.dead_letter(record, refusal)
                continue
            try:
                event = await self._decode(record)
            except Exception as e:  # not Avro, unknown schema id: no retry can help
                await self.dead_letter(record, e)
                continue
            texts, status, languages = plan(event, self.settings.enrich_max_text_chars, self.languages)
            jobs.append(Job(record, event, texts, status, languages))
        # chunk by chunk, in order: the model workers infer the next chunks while this loop encodes and sends
        step = self.settings.enrich_model_batch
        inferences = [asyncio.ensure_future(self._infer_or_dead_letter(jobs[i:i + step]))
                      for i in range(0, len(jobs), step)]
        sends = []
        try:
            for inference in inferences:
                for job, enrichment in await inference:
                    sends.append((job.record, await self._send(job, enrichment)))
        finally:
            for inference in inferences:
                inference.cancel()
        await self.refusals.acknowledged(sends)

    async def _decode(self, record: ConsumerRecord) -> dict:
        """Waits out an unreachable schema registry; what it cannot decode once reached is raised."""
        wait = 0.2
        while True:
            try:
                return await self.publisher.serde.decode(record.value)
            except (httpx.TransportError, OSError) as e:
                log.warning("schema registry unreachable, retrying in %.1fs: %s", wait, type(e).__name__)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)

    async def _infer_or_dead_letter(self, jobs: list[Job]) -> list[tuple[Job, dict]]:
        """Infers the whole batch; if the model refuses it, halves it until the records it refuses are alone, and
        dead-letters those. While the model is unavailable, waits (nothing is acked meanwhile)."""
        if not jobs:
            return []
        wait = 0.2
        while True:
            try:
                return list(zip(jobs, await self._infer(jobs), strict=True))
            except ModelUnavailable as e:
                log.warning("models unavailable, retrying in %.1fs: %s", wait, mask(str(e)))
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
            except ModelFailed as e:
                if len(jobs) == 1:
                    await self.dead_letter(jobs[0].record, e)
                    return []
                half = len(jobs) // 2
                return await self._infer_or_dead_letter(jobs[:half]) + await self._infer_or_dead_letter(jobs[half:])

    async def _infer(self, jobs: list[Job]) -> list[dict]:
        texts = [(i, field, text) for i, job in enumerate(jobs) for field, text in job.texts.items()]
        out: list[dict[str, Any]] = [{"entities": [], "sentiment": [], "models": [], "languages": job.languages}
                                     for job in jobs]
        if not texts:
            return out
        results, refs = await self.model.predict([text for _, _, text in texts])
        refs = refs or []
        for (i, field, _), result in zip(texts, results, strict=True):
            language = self.languages.route(jobs[i].languages.get(field, UNDETERMINED))
            # each task only where its model covers the language (e.g. Dutch has entities, no sentiment model)
            if language in self.languages.sentiment:
                s = result["sentiment"]
                out[i]["sentiment"].append({"field": field, "label": s["label"], "intensity": s["intensity"],
                                            "score": s["score"], "polarity": s["polarity"], "model": s["model"]})
            ner = language in self.languages.ner
            out[i]["entities"].extend({"field": field, **e} for e in result["entities"]
                                      if ner or e["model"] != refs[0].name)
        for job, enrichment in zip(jobs, out, strict=True):
            if job.texts:
                enrichment["models"] = [vars(r) for r in refs]
        return out

    async def _send(self, job: Job, enrichment: dict) -> Ack:
        """Queues the enriched event in the producer; the returned ack resolves on the broker's acknowledgement."""
        record, topic = job.record, self.settings.enrich_output_topic
        key = record.key.decode() if record.key is not None else job.event["stream_id"]
        value = {**job.event, **enrichment, "enrichment_status": job.status, "enriched_at": int(time.time() * 1000)}
        # CONSUMER span of the input, PRODUCER span of the output (messaging semantic conventions); the send span
        # covers the hand-over to the producer, the ack is awaited for the whole batch
        with process_span(record.topic, self.group, record.headers, record.partition, record.offset) as span:
            span.set_attribute("enrich.status", job.status)
            ack = await self.publisher.enqueue(topic, key, value, schema_of=ENRICHED)
        EVENTS.labels("enriched" if job.texts else "passed_through").inc()
        return ack

    async def dead_letter(self, record: ConsumerRecord, error: BaseException) -> None:
        """The platform's one dead-letter writer. The DLQ copy and its reason are PII-masked (the DLQ is read by
        people, the raw topic keeps the original): a decodable event stays Avro, with its text fields masked."""
        try:
            event = await self.publisher.serde.decode(record.value)
            masked = await self.publisher.serde.encode(dlq(record.topic), masked_event(event), schema_of=RAW)
        except Exception:  # not Avro: masked as text
            masked = mask((record.value or b"").decode("utf-8", errors="replace")).encode()
        with process_span(record.topic, self.group, record.headers, record.partition, record.offset):
            await write_dead_letter(self.publisher, record, masked_error(error), self.group, redact=lambda _: masked)
        EVENTS.labels("dead_lettered").inc()


def masked_error(error: BaseException) -> BaseException:
    """The same exception type with a PII-masked message (the DLQ's reason header), and its traceback."""
    try:
        masked = type(error)(mask(str(error)))
    except Exception:  # an exception whose constructor takes other arguments
        masked = RuntimeError(mask(f"{type(error).__name__}: {error}"))
    return masked.with_traceback(error.__traceback__)


def masked_event(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "text": {k: mask(v) for k, v in event.get("text", {}).items()},
            "attributes": {k: mask(v) for k, v in event.get("attributes", {}).items()},
            "raw_payload": mask(event.get("raw_payload", ""))}
