"""Context for a report from the rag service's index (the tenant's and the shared reference documents), over HTTP.

Each tenant's context is asked with that tenant's own rag API key: rag takes the tenant from the key, so a report
can only cite its own tenant's documents and the shared ones, whatever this client asks."""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)


class RagClient:
    def __init__(self, url: str, top_k: int = 4, timeout: float = 30.0, keys: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.top_k = top_k
        self.keys = dict(keys or {})
        self._client = httpx.AsyncClient(timeout=timeout)

    async def passages(self, query: str, tenant: str) -> tuple[list[dict], dict]:
        """Passages as {chunk_id, document_id, source_uri, title, text, score} (retrieval only, rag generates
        nothing), and what to record in the lineage: the index version, or why there is no context. A report goes
        out without context rather than not at all."""
        key = self.keys.get(tenant)
        if not key:
            log.warning("no rag API key for tenant %s: report without context", tenant)
            return [], {"context_error": f"rag unavailable: no API key for tenant {tenant}"}
        try:
            response = await self._client.post(
                f"{self.url}/v1/query", headers={"Authorization": f"Bearer {key}"},
                json={"question": query[:2000], "k": self.top_k, "generate": False})
            response.raise_for_status()
            body = response.json()
            passages = [{"chunk_id": str(c["chunk_id"]), "document_id": c.get("document_id"),
                         "source_uri": c.get("source_uri"), "title": c.get("title") or "", "text": c.get("text") or "",
                         "score": c.get("score")} for c in body.get("citations") or []]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            log.warning("rag unavailable, report without context: %s", type(e).__name__)
            return [], {"context_error": f"rag unavailable: {type(e).__name__}"}
        return passages, {"index_version": body.get("index_version")}

    async def aclose(self) -> None:
        await self._client.aclose()
