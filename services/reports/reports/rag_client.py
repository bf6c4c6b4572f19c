"""Context for a report from the rag service's index (strategy documents, earlier reports), over HTTP."""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)


class RagClient:
    def __init__(self, url: str, top_k: int = 4, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.top_k = top_k
        self._client = httpx.AsyncClient(timeout=timeout)

    async def passages(self, query: str, tenant: str) -> tuple[list[dict], str | None]:
        """Passages as {chunk_id, document_id, title, text, score}, and why there are none when rag failed: a
        report goes out without context rather than not at all, and its lineage says so."""
        try:
            response = await self._client.post(f"{self.url}/v1/query", json={
                "query": query, "tenant": tenant, "top_k": self.top_k, "generate": False})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as e:
            log.warning("rag unavailable, report without context: %s", type(e).__name__)
            return [], f"rag unavailable: {type(e).__name__}"
        items = body.get("passages") or body.get("citations") or body.get("chunks") or []
        return [{"chunk_id": str(p.get("chunk_id") or p.get("id")), "document_id": p.get("document_id"),
                 "title": p.get("title") or "", "text": p.get("text") or p.get("content") or "",
                 "score": p.get("score")} for p in items][: self.top_k], None

    async def aclose(self) -> None:
        await self._client.aclose()
