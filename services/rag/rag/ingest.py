"""The source-to-index pipeline: one code path for `documents.v1` records and `POST /v1/documents`.

The content hash is the key: the same content again changes nothing, a changed document is re-chunked and
re-embedded alone, a deletion removes it from every index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from .chunking import ChunkingConfig, chunk_text
from .embedder import Embedder
from .store import IndexInfo, Store, chunk_id

log = logging.getLogger(__name__)

DOCUMENTS = Counter("rag_documents_total", "Document changes applied to the index", ["outcome"])
CHUNKS_EMBEDDED = Counter("rag_chunks_embedded_total", "Chunks embedded and written to the index")
INGEST_SECONDS = Histogram("rag_ingest_duration_seconds", "Time to apply one document change",
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class InvalidDocument(ValueError):
    """A document change that cannot be applied whatever the retries (goes to the DLQ / answers 422)."""


@dataclass(frozen=True)
class IngestResult:
    document_id: str
    status: str  # created, updated, metadata, unchanged, stale, deleted, absent
    chunks: int = 0
    embedded: int = 0


def content_hash(title: str, content: str) -> str:
    # the title is embedded with every chunk, so it is part of what decides a re-embedding
    return hashlib.sha256(f"{title}\n\x00{content}".encode()).hexdigest()


def _timestamp(value: datetime | int | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value / 1000, UTC)


def normalise(change: dict) -> dict:
    """A `documents.v1` value (or the same shape from the API) as the store's document row."""
    document_id = (change.get("document_id") or "").strip()
    if not document_id:
        raise InvalidDocument("document_id is empty")
    op = change.get("op", "upsert")
    if op not in ("upsert", "delete"):
        raise InvalidDocument(f"op must be upsert or delete, not {op!r}")
    if op == "upsert" and not (change.get("content") or "").strip():
        raise InvalidDocument("an upsert needs non-empty content")
    title = change.get("title") or ""
    content = change.get("content") or ""
    return {"document_id": document_id, "op": op, "source_uri": change.get("source_uri") or "", "title": title,
            "content": content, "content_hash": content_hash(title, content),
            "tenant": change.get("tenant") or "default", "sector": change.get("sector"),
            "doc_type": change.get("doc_type"), "metadata": dict(change.get("metadata") or {}),
            "updated_at": _timestamp(change.get("updated_at"))}


class Indexer:
    def __init__(self, store: Store, embedder: Embedder, chunking: ChunkingConfig):
        self.store = store
        self.embedder = embedder
        self.chunking = chunking
        self.index: IndexInfo | None = None

    async def open(self) -> IndexInfo:
        """Opens this embedder's index and brings it up to date with the stored documents: a new embedder or
        chunking config builds its index beside the old ones; an interrupted build resumes."""
        self.index, created = await self.store.open_index(self.embedder.name, self.embedder.version,
                                                          self.embedder.dim, self.chunking)
        missing = await self.store.documents_missing_from(self.index)
        if missing or created:
            started = time.perf_counter()
            for row in missing:
                await self._upsert(dict(row) | {"metadata": _json(row["metadata"])})
            await self.store.mark_built(self.index, time.perf_counter() - started)
            log.info("index %s: built %d documents in %.1fs", self.index.version, len(missing),
                     time.perf_counter() - started)
        return self.index

    async def apply(self, change: dict) -> IngestResult:
        started = time.perf_counter()
        doc = normalise(change)
        if doc["op"] == "delete":
            found = await self.store.delete_document(doc["document_id"])
            result = IngestResult(doc["document_id"], "deleted" if found else "absent")
        else:
            result = await self._upsert(doc)
        DOCUMENTS.labels(result.status).inc()
        INGEST_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _upsert(self, doc: dict) -> IngestResult:
        assert self.index is not None, "open() first"
        if await self.store.has_chunks(self.index, doc["document_id"], doc["content_hash"]):
            status = await self.store.write_document(self.index, doc, None, None)
            return IngestResult(doc["document_id"], status)
        chunks = [{"chunk_id": chunk_id(doc["document_id"], doc["content_hash"], c.ordinal), "ordinal": c.ordinal,
                   "text": c.text, "start": c.start, "end": c.end}
                  for c in chunk_text(doc["content"], self.chunking)]
        # title + passage: the title often names the topic that the passage only alludes to
        vectors = await self.embedder.embed([f"{doc['title']}\n{c['text']}" for c in chunks])
        status = await self.store.write_document(self.index, doc, chunks, vectors)
        if status != "stale":
            CHUNKS_EMBEDDED.inc(len(chunks))
        return IngestResult(doc["document_id"], status, len(chunks), len(chunks) if status != "stale" else 0)


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value or {})
