"""Wiring: the store, the embedder and index, the LLM, and the two consumers (documents.v1 and
events.enriched.v1) sharing one publisher."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from aiokafka import ConsumerRecord

from platform_common.kafka import CONTEXTUALIZED, Ack, Publisher, ensure_topics
from platform_common.llm import LLM, InProcessLLM, make_llm
from platform_common.ops import kafka_check, postgres_check, redis_check, registry_check
from platform_common.stream import ReliableConsumer, stream_publisher

from .chunking import ChunkingConfig
from .contextualize import Contextualizer
from .embedder import Embedder
from .generation import Generator
from .ingest import Indexer
from .ratelimit import GenerationLimit
from .retrieval import Retriever
from .settings import RagSettings
from .store import Store

log = logging.getLogger(__name__)


class RagService:
    def __init__(self, settings: RagSettings, llm: LLM | None = None, embedder: Embedder | None = None):
        self.settings = settings
        self.llm = llm or make_llm(settings.rag_llm_backend, data_dir=settings.data_dir, url=settings.rag_llm_url,
                                   model=settings.rag_llm_model, api_key=settings.rag_llm_api_key,
                                   runtime=settings.rag_llm_runtime)
        self.embedder = embedder or Embedder(settings.rag_embed_batch, settings.rag_torch_threads)
        self.chunking = ChunkingConfig(settings.rag_chunk_words, settings.rag_chunk_overlap)
        self.consumers: list[ReliableConsumer] = []

    def checks(self) -> dict:
        s = self.settings
        return {"kafka": kafka_check(s.kafka_bootstrap_servers),
                "schema_registry": registry_check(s.schema_registry_url),
                "postgres": postgres_check(s.database_url), "redis": redis_check(s.redis_url)}

    async def start(self, consume: bool = True) -> None:
        s = self.settings
        # the contextualizer's concurrent searches hold two connections each; the API needs some too
        self.store = await Store.connect(s.database_url, s.rag_db_schema, max_size=2 * s.rag_retrieval_concurrency + 4)
        await self.embedder.load()
        if isinstance(self.llm, InProcessLLM):
            await self.llm.load()
        self.indexer = Indexer(self.store, self.embedder, self.chunking)
        await self.indexer.open()
        self.retriever = Retriever(self.store, self.embedder, self.indexer, s.rag_keyword_timeout_ms)
        self.redis = redis.from_url(s.redis_url, socket_timeout=2)
        self.generator = Generator(self.llm, self.redis, s.rag_llm_max_tokens, s.rag_cache_ttl_seconds)
        self.generation_limit = GenerationLimit(self.redis, s.rag_generations_per_minute,
                                                prefix=f"rag:genlimit:{s.rag_db_schema}")
        self.contextualizer = Contextualizer(self.retriever, self.generator, s.rag_min_score, s.rag_top_k,
                                             s.rag_generate_types, s.rag_generation_freshness_s,
                                             s.rag_retrieval_concurrency, s.rag_generation_timeout_s,
                                             1 if isinstance(self.llm, InProcessLLM) else s.rag_llm_concurrency)
        self.publisher = Publisher(s)
        await self.publisher.start()
        if consume:
            await ensure_topics(s, [s.rag_documents_topic, s.rag_enriched_topic, s.rag_contextualized_topic])
            group = f"{s.rag_group}-contextualize"
            # the contextualized records and the consumed offsets commit together (exactly once downstream)
            self.context_publisher = stream_publisher(s, "exactly_once", group, s.rag_instance_id)
            await self.context_publisher.start()
            self.consumers = [
                ReliableConsumer(s, [s.rag_documents_topic], f"{s.rag_group}-documents", self.on_document,
                                 self.publisher),
                # an event's age when its turn comes is at least the time since its batch started, so no generation
                # (about a second) starts later than the freshness target (5 s) into a batch: a batch takes its
                # retrieval, at most that, one generation and the acks, well inside the 60 s transaction timeout
                ReliableConsumer(s, [s.rag_enriched_topic], group, self.on_event, self.context_publisher,
                                 guarantee="exactly_once", prepare=self.contextualizer.prepare,
                                 max_poll_records=s.rag_contextualize_batch),
            ]
            for consumer in self.consumers:
                await consumer.start()

    async def run(self) -> None:
        await asyncio.gather(self.consumers[0].run(),
                             self.consumers[1].run(max_records=self.settings.rag_contextualize_batch))

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        if self.consumers:
            await self.context_publisher.stop()
        await self.publisher.stop()
        await self.redis.aclose()
        await self.llm.aclose()
        await self.store.close()

    async def on_document(self, value: dict, record: ConsumerRecord) -> None:
        result = await self.indexer.apply(value)
        log.info("document %s: %s (%d chunks embedded)", result.document_id, result.status, result.embedded)

    async def on_event(self, value: dict, record: ConsumerRecord) -> Ack:
        """Hands the contextualized record to the producer; the stream awaits the batch's acks together before its
        transaction commits (a broker round trip per record was what bounded the rate)."""
        out = await self.contextualizer.contextualize(value)
        return await self.context_publisher.enqueue(self.settings.rag_contextualized_topic, value["stream_id"], out,
                                                    schema_of=CONTEXTUALIZED)
