"""HTTP API on port 8003: the query API for ops teams, the document API (same path as `documents.v1`), the index
registry, chunk lookup for citations, and /healthz, /readyz, /metrics.

Every route but the ops endpoints needs an API key (`platform_common.auth`): `read` to query and look up, `write`
to change documents. The tenant is the key's, never a field of the request: a caller reads its own tenant's
documents and the shared reference documents, and writes only its own."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from platform_common.auth import Principal, install_auth, require
from platform_common.limits import BodyLimit
from platform_common.llm import LLMError
from platform_common.ops import ops_router

from .contextualize import NO_CONTEXT, PASSAGES_IN_PROMPT, format_passages, grounded_text
from .ingest import InvalidDocument
from .prompts import load_prompt
from .store import Filters

# the ops endpoints stay open: probes and Prometheus call them without credentials, and they hold no tenant data
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refused as invalid, not failed on as a 500
Short = Annotated[str, Field(max_length=200, pattern=NO_NUL)]
DocumentId = Annotated[str, Path(min_length=1, max_length=512, pattern=NO_NUL)]


class QueryFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a `tenant` filter is refused, not silently ignored
    sector: Short | None = None
    doc_type: Short | None = None


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)
    filters: QueryFilters = QueryFilters()
    k: int = Field(5, ge=1, le=50, description="passages retrieved; a generated answer cites the best two, which "
                                               "its prompt held")
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    generate: bool = Field(True, description="False: retrieval only, no answer is generated, the k passages cited")


class DocumentIn(BaseModel):
    """A document of the caller's tenant (the tenant comes from the API key)."""
    model_config = ConfigDict(extra="forbid")
    document_id: str = Field(min_length=1, max_length=512)
    op: Literal["upsert", "delete"] = "upsert"
    source_uri: str = Field("", max_length=2048)
    title: str = Field("", max_length=1000)
    content: str | None = Field(None, max_length=1_000_000)
    sector: Short | None = None
    doc_type: Short | None = None
    metadata: dict[Short, Annotated[str, Field(max_length=1000)]] = Field({}, max_length=50)
    updated_at: datetime | None = None

    @field_validator("metadata")
    @classmethod
    def _not_shared(cls, value: dict[str, str]) -> dict[str, str]:
        if "shared" in value:  # the shared namespace is the folder loader's and documents.v1's, never a key's
            raise ValueError("'shared' is a reserved metadata key")
        return value


def error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def create_app(service, keys=None) -> FastAPI:
    """The API over `service`; `keys` (a KeyStore) is read from API_KEYS / API_KEYS_FILE unless given."""
    app = FastAPI(title="rag", description="Document index and retrieval-augmented context. Every route but "
                  "/healthz, /readyz and /metrics takes `Authorization: Bearer pk_...`; the tenant is the key's.")
    install_auth(app, keys)
    app.add_middleware(BodyLimit, max_bytes=service.settings.rag_max_body_bytes)
    app.include_router(ops_router(service.checks()))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}" if where else "invalid body")

    @app.post("/v1/query", summary="Answer a question from the caller's and the shared documents, with cited chunks")
    async def query(body: QueryRequest, who: Principal = Depends(require("read"))):
        started = time.perf_counter()
        if body.generate:
            retry = await service.generation_limit.take(who.key_id)
            if retry is not None:
                return error(429, "rate_limited", f"over {service.settings.rag_generations_per_minute} generations "
                             "a minute for this key; retry later or ask with generate=false",
                             {"Retry-After": str(int(retry))})
        filters = Filters(tenant=who.tenant, **body.filters.model_dump())
        retrieval = await service.retriever.search(body.question, filters, k=body.k, mode=body.mode)
        retrieved = time.perf_counter()
        grounded = retrieval.grounding(service.settings.rag_min_score)
        prompt = load_prompt("answer.v1")
        answer, cited = NO_CONTEXT, grounded
        if grounded and body.generate:
            # an answer cites exactly the passages its prompt held, and passes the contextualized events' check
            cited = grounded[:PASSAGES_IN_PROMPT]
            try:
                answer = grounded_text(await service.generator.generate(
                    prompt, passages=format_passages(cited), question=body.question), cited, body.question)
            except LLMError as e:
                return error(503, "llm_unavailable", str(e))
        elif grounded:
            answer = ""
        done = time.perf_counter()
        return {"answer": answer, "grounded": bool(grounded), "model": service.generator.model,
                "prompt_version": prompt.version, "index_version": service.indexer.index.version,
                "citations": [{**h.citation(), "title": h.title, "text": h.text, "doc_type": h.doc_type,
                               "sector": h.sector, "shared": h.tenant != who.tenant, "fused_score": h.score}
                              for h in cited],
                # the keyword side ran out of time (RAG_KEYWORD_TIMEOUT_MS): the citations come from dense alone
                "keyword_timed_out": retrieval.keyword_timed_out,
                "timings_ms": {"retrieval": round((retrieved - started) * 1000, 2),
                               "generation": round((done - retrieved) * 1000, 2),
                               "total": round((done - started) * 1000, 2)}}

    @app.post("/v1/documents", summary="Upsert or delete a document of the caller's tenant (as documents.v1)")
    async def put_document(body: DocumentIn, who: Principal = Depends(require("write"))):
        try:
            result = await service.indexer.apply({**body.model_dump(), "tenant": who.tenant})
        except InvalidDocument as e:
            return error(422, "invalid_document", str(e))
        return {**result.__dict__, "index_version": service.indexer.index.version}

    @app.delete("/v1/documents/{document_id}", summary="Delete a document of the caller's tenant from every index")
    async def delete_document(document_id: DocumentId, who: Principal = Depends(require("write"))):
        result = await service.indexer.apply({"document_id": document_id, "op": "delete", "tenant": who.tenant})
        if result.status == "absent":
            return error(404, "not_found", f"no document {document_id!r}")
        return result.__dict__

    @app.get("/v1/documents/{document_id}", summary="A document's lineage and its chunks in the current index")
    async def get_document(document_id: DocumentId, who: Principal = Depends(require("read"))):
        doc = await service.store.visible_document(who.tenant, document_id)
        if doc is None:  # another tenant's document answers as one that does not exist
            return error(404, "not_found", f"no document {document_id!r}")
        chunks = await service.store.chunks_of(service.indexer.index, doc["tenant"], document_id)
        return {**{k: doc[k] for k in ("document_id", "source_uri", "title", "content_hash", "tenant", "sector",
                                        "doc_type", "updated_at", "ingested_at")},
                "metadata": json.loads(doc["metadata"]), "index_version": service.indexer.index.version,
                "chunks": [{"chunk_id": c["chunk_id"], "ordinal": c["ordinal"], "char_start": c["char_start"],
                            "char_end": c["char_end"]} for c in chunks]}

    @app.get("/v1/chunks/{chunk_id:path}", summary="Resolve a citation: the chunk with its lineage")
    async def get_chunk(chunk_id: Annotated[str, Path(max_length=700, pattern=NO_NUL)],
                        who: Principal = Depends(require("read"))):
        chunk = await service.store.chunk(service.indexer.index, who.tenant, chunk_id)
        if chunk is None:
            return error(404, "not_found", f"no chunk {chunk_id!r} in index {service.indexer.index.version}")
        return {**dict(chunk), "index_version": service.indexer.index.version}

    @app.get("/v1/indexes", summary="The index registry: versions, embedders, chunking, the caller's counts")
    async def indexes(who: Principal = Depends(require("read"))):
        return await service.store.indexes(who.tenant)

    return app
