"""HTTP API on port 8003: the query API for ops teams, the document API (same path as `documents.v1`), the index
registry, chunk lookup for citations, and /healthz, /readyz, /metrics."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from platform_common.llm import LLMError
from platform_common.ops import ops_router

from .contextualize import NO_CONTEXT, format_passages
from .ingest import InvalidDocument
from .prompts import load_prompt
from .store import Filters


class QueryFilters(BaseModel):
    tenant: str | None = None
    sector: str | None = None
    doc_type: str | None = None


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    filters: QueryFilters = QueryFilters()
    k: int = Field(5, ge=1, le=50)
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    generate: bool = Field(True, description="False: retrieval only, no answer is generated")


class DocumentIn(BaseModel):
    document_id: str = Field(min_length=1, max_length=512)
    op: Literal["upsert", "delete"] = "upsert"
    source_uri: str = ""
    title: str = ""
    content: str | None = Field(None, max_length=2_000_000)
    tenant: str = "default"
    sector: str | None = None
    doc_type: str | None = None
    metadata: dict[str, str] = {}
    updated_at: datetime | None = None


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def create_app(service) -> FastAPI:
    app = FastAPI(title="rag", description="Document index and retrieval-augmented context")
    app.include_router(ops_router(service.checks()))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}" if where else "invalid body")

    @app.post("/v1/query", summary="Answer a question from the indexed documents, with cited chunks")
    async def query(body: QueryRequest):
        started = time.perf_counter()
        filters = Filters(**body.filters.model_dump())
        hits = await service.retriever.search(body.question, filters, k=body.k, mode=body.mode)
        retrieved = time.perf_counter()
        grounded = [h for h in hits if h.similarity >= service.settings.rag_min_score]
        prompt = load_prompt("answer.v1")
        answer = NO_CONTEXT
        if grounded and body.generate:
            try:
                answer = await service.generator.generate(prompt, passages=format_passages(grounded[:3]),
                                                          question=body.question)
            except LLMError as e:
                return error(503, "llm_unavailable", str(e))
        elif grounded:
            answer = ""
        done = time.perf_counter()
        return {"answer": answer, "grounded": bool(grounded), "model": service.generator.model,
                "prompt_version": prompt.version, "index_version": service.indexer.index.version,
                "citations": [{**h.citation(), "title": h.title, "text": h.text, "doc_type": h.doc_type,
                               "sector": h.sector, "fused_score": h.score} for h in grounded],
                "timings_ms": {"retrieval": round((retrieved - started) * 1000, 2),
                               "generation": round((done - retrieved) * 1000, 2),
                               "total": round((done - started) * 1000, 2)}}

    @app.post("/v1/documents", summary="Upsert or delete a document (the same path as documents.v1)")
    async def put_document(body: DocumentIn):
        try:
            result = await service.indexer.apply(body.model_dump())
        except InvalidDocument as e:
            return error(422, "invalid_document", str(e))
        return {**result.__dict__, "index_version": service.indexer.index.version}

    @app.delete("/v1/documents/{document_id}", summary="Delete a document from every index")
    async def delete_document(document_id: str):
        result = await service.indexer.apply({"document_id": document_id, "op": "delete"})
        if result.status == "absent":
            return error(404, "not_found", f"no document {document_id!r}")
        return result.__dict__

    @app.get("/v1/documents/{document_id}", summary="A document's lineage and its chunks in the current index")
    async def get_document(document_id: str):
        doc = await service.store.get_document(document_id)
        if doc is None:
            return error(404, "not_found", f"no document {document_id!r}")
        chunks = await service.store.chunks_of(service.indexer.index, document_id)
        return {**{k: doc[k] for k in ("document_id", "source_uri", "title", "content_hash", "tenant", "sector",
                                        "doc_type", "updated_at", "ingested_at")},
                "metadata": json.loads(doc["metadata"]), "index_version": service.indexer.index.version,
                "chunks": [{"chunk_id": c["chunk_id"], "ordinal": c["ordinal"], "char_start": c["char_start"],
                            "char_end": c["char_end"]} for c in chunks]}

    @app.get("/v1/chunks/{chunk_id:path}", summary="Resolve a citation: the chunk with its lineage")
    async def get_chunk(chunk_id: str):
        chunk = await service.store.chunk(service.indexer.index, chunk_id)
        if chunk is None:
            return error(404, "not_found", f"no chunk {chunk_id!r} in index {service.indexer.index.version}")
        return {**dict(chunk), "index_version": service.indexer.index.version}

    @app.get("/v1/indexes", summary="The index registry: versions, embedders, chunking, counts, build times")
    async def indexes():
        return await service.store.indexes()

    return app
