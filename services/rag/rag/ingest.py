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

from platform_common.auth import RESERVED_TENANT

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
    tenant: str = "default"


def content_hash(title: str, content: str) -> str:
    # the title is embedded with every chunk, so it is part of what decides a re-embedding
    return hashlib.sha256(f"{title}\n\x00{content}".encode()).hexdigest()


def _timestamp(value: datetime | int | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value / 1000, UTC)


SHARED_FLAG = "shared"  # metadata key; "true" together with the reserved tenant marks a shared reference document


def shared_metadata(metadata: dict | None = None) -> dict:
    return {**(metadata or {}), SHARED_FLAG: "true"}


def normalise(change: dict) -> dict:
    """A `documents.v1` value (or the same shape from the API, with the caller's tenant) as the store's document
    row. The shared namespace takes a document only with the explicit flag, so a record that merely names the
    reserved tenant (a typo, a forged value) cannot publish to every tenant."""
    document_id = (change.get("document_id") or "").strip()
    if not document_id:
        raise InvalidDocument("document_id is empty")
    tenant = (change.get("tenant") or "default").strip()
    metadata = dict(change.get("metadata") or {})
    if tenant == RESERVED_TENANT and metadata.get(SHARED_FLAG) != "true":
        raise InvalidDocument(f"tenant {RESERVED_TENANT!r} needs metadata {SHARED_FLAG}=true (a shared document)")
    op = change.get("op", "upsert")
    if op not in ("upsert", "delete"):
        raise InvalidDocument(f"op must be upsert or delete, not {op!r}")
    texts = [document_id, tenant, *(change.get(k) or "" for k in ("source_uri", "title", "content", "sector",
                                                                    "doc_type")), *metadata, *metadata.values()]
    if any("\x00" in t for t in texts):  # PostgreSQL text cannot hold NUL
        raise InvalidDocument("text fields may not contain NUL characters")
    if op == "upsert" and not (change.get("content") or "").strip():
        raise InvalidDocument("an upsert needs non-empty content")
    title = change.get("title") or ""
    content = change.get("content") or ""
    return {"document_id": document_id, "op": op, "source_uri": change.get("source_uri") or "", "title": title,
            "content": content, "content_hash": content_hash(title, content),
            "tenant": tenant, "sector": change.get("sector"), "doc_type": change.get("doc_type"), "metadata": metadata,
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
            found = await self.store.delete_document(doc["tenant"], doc["document_id"])
            result = IngestResult(doc["document_id"], "deleted" if found else "absent", tenant=doc["tenant"])
        else:
            result = await self._upsert(doc)
        DOCUMENTS.labels(result.status).inc()
        INGEST_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _upsert(self, doc: dict) -> IngestResult:
        assert self.index is not None, "open() first"
        if await self.store.has_chunks(self.index, doc["tenant"], doc["document_id"], doc["content_hash"]):
            status = await self.store.write_document(self.index, doc, None, None)
            return IngestResult(doc["document_id"], status, tenant=doc["tenant"])
        chunks = [{"chunk_id": chunk_id(doc["document_id"], doc["content_hash"], c.ordinal), "ordinal": c.ordinal,
                   "text": c.text, "start": c.start, "end": c.end}
                  for c in chunk_text(doc["content"], self.chunking)]
        # title + passage: the title often names the topic that the passage only alludes to
        vectors = await self.embedder.embed([f"{doc['title']}\n{c['text']}" for c in chunks])
        status = await self.store.write_document(self.index, doc, chunks, vectors)
        if status != "stale":
            CHUNKS_EMBEDDED.inc(len(chunks))
        return IngestResult(doc["document_id"], status, len(chunks), len(chunks) if status != "stale" else 0,
                            doc["tenant"])


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value or {})
