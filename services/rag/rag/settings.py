"""The rag service's settings: the shared ones plus `RAG_*` variables."""

from platform_common.kafka import CONTEXTUALIZED, DOCUMENTS, ENRICHED
from platform_common.settings import CommonSettings


class RagSettings(CommonSettings):
    service_name: str = "rag"
    rag_port: int = 8003
    # loopback unless configured: a container or pod sets 0.0.0.0 behind its network policy
    rag_host: str = "127.0.0.1"
    # request bodies over this are refused with 413 before they are read (a document's content is at most 1M chars)
    rag_max_body_bytes: int = 4 * 1024 * 1024
    # generations on POST /v1/query per API key and minute (429 beyond); retrieval-only queries are not counted
    rag_generations_per_minute: int = 30
    # PostgreSQL schema holding the service's tables (tests use their own)
    rag_db_schema: str = "rag"
    rag_documents_topic: str = DOCUMENTS
    rag_enriched_topic: str = ENRICHED
    rag_contextualized_topic: str = CONTEXTUALIZED
    rag_group: str = "rag"
    # with the group, the transactional id of the contextualizer (stable per replica; default: the host name)
    rag_instance_id: str | None = None
    # chunking: words per chunk and words shared by neighbouring chunks; part of the index version
    rag_chunk_words: int = 120
    rag_chunk_overlap: int = 20
    rag_embed_batch: int = 64
    rag_torch_threads: int = 1
    # cosine similarity under which a passage does not count as grounding (unless it holds most of the query's
    # BM25 mass: rag/retrieval.py)
    rag_min_score: float = 0.3
    # time budget of a query's keyword side; past it the query is answered from the dense side alone
    rag_keyword_timeout_ms: int = 250
    rag_top_k: int = 4
    # the LLM writes summaries only for selected events: risk-flagged (strongly negative sentiment included) or of
    # these event types per tenant, JSON {"tenant": ["complaint", ...]} ("*": every tenant); others get
    # retrieval-only context
    rag_generate_types: dict[str, list[str]] = {}
    # a selected event older than this (since enrichment) when its turn comes goes out retrieval-only
    rag_generation_freshness_s: float = 5.0
    # a generation still running after this goes out retrieval-only (a batch must end inside its 60 s transaction)
    rag_generation_timeout_s: float = 20.0
    # events per contextualizer batch (one transaction; their queries embedded in one call, then searched this
    # many at a time: each hybrid search holds two database connections)
    rag_contextualize_batch: int = 256
    rag_retrieval_concurrency: int = 4
    rag_llm_backend: str = "embedded"  # embedded or openai
    rag_llm_runtime: str = "llama.cpp"  # the embedded backend's runtime: llama.cpp or transformers
    rag_llm_url: str | None = None
    rag_llm_model: str | None = None
    rag_llm_api_key: str | None = None
    rag_llm_max_tokens: int = 48
    # generations of a batch in flight at once: an OpenAI-compatible server (vLLM, llama.cpp server) batches them;
    # the embedded model runs one at a time, so 1 there (then no generation starts past the freshness target)
    rag_llm_concurrency: int = 8
    rag_cache_ttl_seconds: int = 7 * 24 * 3600
