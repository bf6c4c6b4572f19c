"""Benchmark of the rag service against the running stack (PostgreSQL + pgvector; no Kafka needed):

1. documents indexed per second through the ingest path (chunk, embed with the real model, write), 200 documents;
2. query latency p50/p95 (hybrid, dense, keyword) over an index of 100k chunks, each the median of ROUNDS rounds
   (the modes take turns within a round). Embedding 100k chunks would take most of an hour here, so those chunks are
   bulk-loaded with synthetic text and real-model-shaped vectors (real all-MiniLM-L6-v2 embeddings of 2,000
   sentences, mixed and re-normalised); the queries are embedded for real. The synthetic text draws on 49 words, so
   every query term is in about 40% of the chunks: the hard case for bounding keyword candidates. The 100k-chunk
   index is kept in schema `rag_bench` and reused by later runs;
3. contextualized events per second with the embedded SmolLM2-135M (generation cache off), in process: every event
   generated, and the tiered path on a mix (one event in ten risky and generated, the rest retrieval-only).

Run: .venv/bin/python services/rag/bench.py
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import numpy as np
from prometheus_client import REGISTRY

from platform_common.llm import InProcessLLM, make_llm
from rag.chunking import ChunkingConfig
from rag.contextualize import Contextualizer
from rag.embedder import Embedder
from rag.generation import Generator
from rag.ingest import Indexer
from rag.retrieval import Retriever
from rag.settings import RagSettings
from rag.store import Filters, Store

BULK_CHUNKS = 100_000
QUERIES = 60
ROUNDS = 3
EVENTS = 6
MIX_EVENTS = 640
WORDS = ("payment settlement card account loan mortgage deposit fraud breach outage complaint refund sanction "
         "screening custody crypto climate emission grid telecom subscriber patient record claim policy premium "
         "branch cash liquidity capital reporting audit vendor outsourcing resilience incident regulator deadline "
         "customer supplier invoice contract privacy consent marketing pricing disclosure exposure collateral").split()


def sentence(rng: random.Random) -> str:
    words = rng.sample(WORDS, 12)
    return f"The {words[0]} {words[1]} team reviews {words[2]} and {words[3]} for {words[4]} " \
           f"{words[5]} cases, reporting {words[6]} {words[7]} issues to the {words[8]} {words[9]} " \
           f"owner before the {words[10]} {words[11]} review."


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


async def bench_ingest(settings: RagSettings, embedder: Embedder) -> tuple[float, float, int]:
    store = await Store.connect(settings.database_url, f"rag_bench_ingest_{uuid.uuid4().hex[:8]}")
    try:
        indexer = Indexer(store, embedder, ChunkingConfig(settings.rag_chunk_words, settings.rag_chunk_overlap))
        await indexer.open()
        rng = random.Random(1)
        docs = [{"document_id": f"doc-{i}", "title": f"Procedure {i}", "source_uri": f"file://bench/{i}.md",
                 "content": " ".join(sentence(rng) for _ in range(12))} for i in range(200)]
        started = time.perf_counter()
        chunks = sum([(await indexer.apply(d)).embedded for d in docs])
        seconds = time.perf_counter() - started
        return len(docs) / seconds, chunks / seconds, chunks
    finally:
        await store.pool.execute(f"DROP SCHEMA {store.schema} CASCADE")
        await store.close()


async def bulk_index(settings: RagSettings, embedder: Embedder) -> tuple[Store, Indexer, str]:
    store = await Store.connect(settings.database_url, "rag_bench", max_size=2)
    indexer = Indexer(store, embedder, ChunkingConfig(settings.rag_chunk_words, settings.rag_chunk_overlap))
    index, _ = await store.open_index(embedder.name, embedder.version, embedder.dim, indexer.chunking)
    indexer.index = index
    table = f"{store.schema}.{index.table}"
    have = await store.pool.fetchval(f"SELECT count(*) FROM {table}")
    if have == BULK_CHUNKS:
        return store, indexer, "reused"
    started = time.perf_counter()
    rng = random.Random(7)
    seeds = [sentence(rng) for _ in range(2000)]
    base = await embedder.embed(seeds)
    np_rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    async with store.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {table}; DROP INDEX IF EXISTS {store.schema}.{index.table}_hnsw")
        for start in range(0, BULK_CHUNKS, 10_000):
            n = min(10_000, BULK_CHUNKS - start)
            picks = np_rng.integers(0, len(seeds), size=(n, 2))
            vectors = base[picks[:, 0]] * 0.7 + base[picks[:, 1]] * 0.3 + np_rng.normal(0, 0.02, (n, embedder.dim))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            records = [(f"bulk-{start + i}@0-0", f"bulk-{(start + i) // 4}", (start + i) % 4,
                        f"{seeds[a]} {seeds[b]}", 0, 0, "Bulk procedure", "file://bench/bulk", "default", "finance",
                        "procedure", "0", now, vectors[i].astype(np.float32))
                       for i, (a, b) in enumerate(picks)]
            await conn.copy_records_to_table(
                index.table, schema_name=store.schema, records=records,
                columns=["chunk_id", "document_id", "ordinal", "text", "char_start", "char_end", "title",
                         "source_uri", "tenant", "sector", "doc_type", "content_hash", "ingested_at", "embedding"])
        await conn.execute("SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 1")
        await conn.execute(f"CREATE INDEX {index.table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)")
        await conn.execute(f"UPDATE {store.schema}.indexes SET chunk_count = $1, doc_count = $2 "
                           "WHERE index_version = $3", BULK_CHUNKS, BULK_CHUNKS // 4, index.version)
        await conn.execute(f"ANALYZE {table}")
    return store, indexer, f"loaded in {time.perf_counter() - started:.0f} s"


def keyword_counts() -> dict[str, float]:
    """How keyword searches ended so far: the candidate pass that proved them exact, or the timeout."""
    counts = {p: REGISTRY.get_sample_value("rag_keyword_decided_total", {"pass": p}) or 0.0
              for p in ("prefix", "segment", "exhaustive")}
    return counts | {"timeout": REGISTRY.get_sample_value("rag_keyword_timeouts_total") or 0.0}


async def bench_queries(store: Store, indexer: Indexer, embedder: Embedder,
                        timeout_ms: int) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    retriever = Retriever(store, embedder, indexer, timeout_ms)
    rng = random.Random(3)
    questions = [f"Who reviews {' and '.join(rng.sample(WORDS, 2))} for {rng.choice(WORDS)} cases?"
                 for _ in range(QUERIES)]
    await retriever.search("warm up the connections and the model", Filters("default"), k=5)
    before = keyword_counts()
    rounds: dict[str, list[tuple[float, float]]] = {"hybrid": [], "dense": [], "keyword": []}
    for _ in range(ROUNDS):
        for mode, figures in rounds.items():
            latencies = []
            for q in questions:
                started = time.perf_counter()
                await retriever.search(q, Filters("default"), k=5, mode=mode)
                latencies.append((time.perf_counter() - started) * 1000)
            figures.append((percentile(latencies, 50), percentile(latencies, 95)))
    ended = {key: value - before[key] for key, value in keyword_counts().items()}
    return {mode: (float(np.median([f[0] for f in figures])), float(np.median([f[1] for f in figures])))
            for mode, figures in rounds.items()}, ended


async def bench_contextualize(settings: RagSettings,
                              embedder: Embedder) -> tuple[float, float, list[float], Counter[str]]:
    store = await Store.connect(settings.database_url, f"rag_bench_ctx_{uuid.uuid4().hex[:8]}",
                                max_size=2 * settings.rag_retrieval_concurrency + 4)
    llm = make_llm("embedded", data_dir=settings.data_dir, runtime=settings.rag_llm_runtime)
    try:
        indexer = Indexer(store, embedder, ChunkingConfig(settings.rag_chunk_words, settings.rag_chunk_overlap))
        await indexer.open()
        await indexer.apply({"document_id": "resilience", "title": "Operational resilience", "doc_type": "regulation",
                             "content": "Critical payment services must be restored within two hours after a "
                                        "disruption. A payment outage lasting longer is reported to the regulator "
                                        "as a major incident, with its cause and the customers affected."})
        if isinstance(llm, InProcessLLM):
            await llm.load()
        contextualizer = Contextualizer(Retriever(store, embedder, indexer),
                                        Generator(llm, None, settings.rag_llm_max_tokens, 60),
                                        settings.rag_min_score, settings.rag_top_k,
                                        concurrency=settings.rag_retrieval_concurrency)
        events = [{"event_id": f"e{i}", "source": "bench", "type": "incident.reported", "stream_id": f"s{i}",
                   "tenant": "default", "occurred_at": 0, "attributes": {}, "sentiment": [],
                   "text": {"body": f"Card payments at branch {i} have been failing after a payment outage."}}
                  for i in range(EVENTS)]
        started = time.perf_counter()
        grounded = [await contextualizer.contextualize(e) for e in events]
        seconds = time.perf_counter() - started
        assert all(g["grounded"] and g["outcome"] == "generated" for g in grounded)
        # the tiered path on a stream like the pipeline bench's: one event in ten risky (generated), the rest
        # routine readings (retrieval only), in batches whose queries are embedded in one call
        mix = [{"event_id": f"m{i}", "source": "bench", "type": "reading", "stream_id": f"s{i % 50}",
                "tenant": "default", "occurred_at": 0, "attributes": {}, "sentiment": [],
                "enriched_at": datetime.now(UTC),
                "text": {"body": f"Card payments at branch {i} failed after a payment outage." if i % 10 == 0
                         else f"Reading {i} of payment terminal {i % 50} at the bank looks fine."}}
               for i in range(MIX_EVENTS)]
        rates, outcomes = [], Counter[str]()
        # then with every selected event past the freshness target (a backlog): the retrieval-only ceiling
        for freshness in (settings.rag_generation_freshness_s, -1.0):
            contextualizer.freshness_s = freshness
            started = time.perf_counter()
            for at in range(0, len(mix), settings.rag_contextualize_batch):
                batch = mix[at:at + settings.rag_contextualize_batch]
                for e in batch:
                    e["enriched_at"] = datetime.now(UTC)  # each batch as it arrives
                await contextualizer.prepare(batch)
                for e in batch:
                    outcomes[f"{(await contextualizer.contextualize(e))['outcome']} ({freshness:g} s)"] += 1
            rates.append(len(mix) / (time.perf_counter() - started))
        return len(events) / seconds, seconds / len(events), rates, outcomes
    finally:
        await store.pool.execute(f"DROP SCHEMA {store.schema} CASCADE")
        await store.close()
        await llm.aclose()


async def main() -> None:
    logging.disable(logging.WARNING)
    settings = RagSettings()
    embedder = Embedder(settings.rag_embed_batch, settings.rag_torch_threads)
    await embedder.load()
    docs_per_s, chunks_per_s, chunks = await bench_ingest(settings, embedder)
    store, indexer, how = await bulk_index(settings, embedder)
    try:
        latency, keyword_ends = await bench_queries(store, indexer, embedder, settings.rag_keyword_timeout_ms)
    finally:
        await store.close()
    events_per_s, seconds_per_event, (mixed_per_s, ceiling_per_s), outcomes = await bench_contextualize(settings,
                                                                                                       embedder)
    print("## rag\n")
    print("| figure | value |\n|---|---|")
    print(f"| documents indexed per second (200 docs of ~12 sentences, {chunks} chunks, real embeddings) "
          f"| {docs_per_s:.1f} docs/s ({chunks_per_s:.1f} chunks/s) |")
    for mode, (p50, p95) in latency.items():
        print(f"| {mode} query latency at {BULK_CHUNKS // 1000}k chunks, p50 / p95 ({QUERIES} queries, k=5, "
              f"median of {ROUNDS} rounds) | {p50:.1f} ms / {p95:.1f} ms |")
    print("| keyword searches (hybrid and keyword modes) decided by pass: prefix / segment / exhaustive; timed out "
          f"| {' / '.join(str(int(v)) for k, v in keyword_ends.items() if k != 'timeout')}; "
          f"{int(keyword_ends['timeout'])} |")
    print(f"| contextualized events per second, embedded SmolLM2-135M, {settings.rag_llm_max_tokens} new tokens max "
          f"| {events_per_s:.2f} events/s ({seconds_per_event:.2f} s/event) |")
    print(f"| contextualized events per second, tiered, {MIX_EVENTS} events one in ten risky, batches of "
          f"{settings.rag_contextualize_batch}, {settings.rag_retrieval_concurrency} searches at a time (same run, "
          f"same model) | {mixed_per_s:.1f} events/s |")
    print(f"| the same with every event past the freshness target (a backlog: retrieval only) | {ceiling_per_s:.1f} "
          "events/s |")
    print(f"| outcomes of the two tiered runs (freshness target) | "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))} |")
    print(f"\n100k-chunk index: synthetic chunks with real-model-shaped vectors ({how}); keyword side: exact BM25 "
          f"with a {settings.rag_keyword_timeout_ms} ms budget; torch threads: {settings.rag_torch_threads}; "
          "machine shared with other services while measured.\n")
    print("Command: `.venv/bin/python services/rag/bench.py`")


if __name__ == "__main__":
    asyncio.run(main())
