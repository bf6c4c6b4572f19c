"""Keyword retrieval against an exact BM25 computed here, in numpy, over the same tokens (each chunk's lexemes and
their positions as PostgreSQL indexed them): the top 5 on the labelled questions and on queries of common words,
the statistics after a deletion, tenants' statistics kept apart, the timeout's dense-only fallback, and keyword-only
finds that survive the relevance cut."""

import asyncio

import asyncpg
import numpy as np
import pytest
from prometheus_client import REGISTRY

from rag.chunking import ChunkingConfig
from rag.ingest import Indexer, shared_metadata
from rag.keyword import corpus
from rag.retrieval import Retriever
from rag.store import Filters, visible_tenants

COMMON_QUERIES = ["Who reviews payment and fraud for outage cases?", "card refund complaint deadline",
                  "privacy consent marketing team", "loan mortgage deposit review", "the audit vendor owner",
                  "reporting issues to the regulator", "cash liquidity capital"]


async def tokens(store, index) -> dict[tuple[str, str], dict[str, int]]:
    """Every chunk's lexemes with their number of positions, straight from the chunk table."""
    rows = await store.pool.fetch(f"""
        SELECT c.tenant, c.chunk_id, l.lexeme, cardinality(l.positions) AS tf
        FROM {store.schema}.{index.table} c LEFT JOIN LATERAL unnest(c.tsv) l ON true""")
    out: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        terms = out.setdefault((r["tenant"], r["chunk_id"]), {})
        if r["lexeme"] is not None:
            terms[r["lexeme"]] = r["tf"]
    return out


async def query_terms(store, query: str) -> list[str]:
    return list(await store.pool.fetchval(
        "SELECT coalesce(array_agg(DISTINCT lexeme), '{}') FROM unnest(to_tsvector('english', $1))", query))


def bm25(chunks: dict[tuple[str, str], dict[str, int]], tenant: str, terms: list[str]) -> dict[tuple[str, str], float]:
    """Okapi BM25 (k1 1.2, b 0.75, idf ln(1 + (N - df + 0.5) / (df + 0.5))) over the chunks `tenant` may see."""
    visible = [key for key in chunks if key[0] in visible_tenants(tenant)]
    lengths = np.array([sum(chunks[key].values()) for key in visible], dtype=float)
    tf = np.array([[chunks[key].get(t, 0) for t in terms] for key in visible], dtype=float).reshape(len(visible), -1)
    df = (tf > 0).sum(axis=0)
    idf = np.log(1 + (len(visible) - df + 0.5) / (df + 0.5))
    norm = 1.2 * (0.25 + 0.75 * lengths / lengths.mean())
    scores = (idf * tf * 2.2 / (tf + norm[:, None])).sum(axis=1)
    return {key: float(s) for key, s in zip(visible, scores, strict=True) if s > 0}


def decided() -> dict[str, float]:
    return {p: REGISTRY.get_sample_value("rag_keyword_decided_total", {"pass": p}) or 0.0
            for p in ("prefix", "segment", "exhaustive")}


async def test_keyword_top_5_is_exact_bm25(store, embedder, retrieval_set, background):
    indexer = Indexer(store, embedder, ChunkingConfig())
    await indexer.open()
    for doc in retrieval_set["documents"][:30] + background(120):
        await indexer.apply(doc)
    # what the caller may see besides its own: a shared document; what it may not: another tenant's
    for doc in retrieval_set["documents"][30:45]:
        await indexer.apply({**doc, "tenant": "_shared", "metadata": shared_metadata()})
    for doc in retrieval_set["documents"][45:]:
        await indexer.apply({**doc, "tenant": "acme"})
    chunks = await tokens(store, indexer.index)
    retriever = Retriever(store, embedder, indexer)
    before = decided()
    queries = [q["question"] for q in retrieval_set["questions"]] + COMMON_QUERIES
    for query in queries:
        expected = bm25(chunks, "default", await query_terms(store, query))
        best = sorted(expected.values(), reverse=True)[:5]
        # five candidates, not the default thirty: shallow prefixes, so that their bounds decide often
        found = (await retriever.search(query, Filters("default"), k=5, mode="keyword", candidates=5)).hits
        assert [h.tenant for h in found if h.tenant not in ("default", "_shared")] == []
        # the same scores in the same order; where scores tie, either of the tied chunks is right
        assert [h.score for h in found] == pytest.approx(best, rel=1e-9), query
        assert all(expected[(h.tenant, h.chunk_id)] == pytest.approx(h.score, rel=1e-9) for h in found), query
    passes = {p: v - before[p] for p, v in decided().items()}
    # the bounded passes decided most searches, so the comparison above checked their bounds
    assert passes["prefix"] > 0 and passes["prefix"] + passes["segment"] > passes["exhaustive"], passes


async def test_a_deletion_and_an_update_change_the_statistics(indexer, store):
    docs = {"a": "Card fraud is reported to the fraud desk. Chargebacks follow within a day.",
            "b": "A payment outage is reported to the regulator within two hours.",
            "c": "Fraud on a mortgage account is reported to the bank's fraud team."}
    for doc_id, text in docs.items():
        await indexer.apply({"document_id": doc_id, "content": text})

    async def stats():
        async with store.pool.acquire() as conn:
            return await corpus(conn, store.schema, indexer.index, ["default"], "fraud reported outage")

    def recount(chunks):
        visible = [c for key, c in chunks.items() if key[0] == "default"]
        return (len(visible), sum(sum(c.values()) for c in visible) / len(visible),
                {t: sum(t in c for c in visible) for t in ("fraud", "report", "outag")})

    first = await stats()
    assert (first.chunks, first.avgdl, first.df) == recount(await tokens(store, indexer.index))
    assert (first.chunks, first.df["fraud"], first.df["outag"]) == (3, 2, 1)

    await indexer.apply({"document_id": "c", "op": "delete"})
    second = await stats()
    assert (second.chunks, second.avgdl, second.df) == recount(await tokens(store, indexer.index))
    assert (second.chunks, second.df["fraud"], second.df["report"]) == (2, 1, 2)

    await indexer.apply({"document_id": "b", "content": "The payment service was restored after an hour."})
    third = await stats()
    assert (third.df["outag"], third.df["fraud"]) == (0, 1)
    assert (third.chunks, third.avgdl, third.df) == recount(await tokens(store, indexer.index))
    # new metadata rewrites the chunk rows in place (an UPDATE): the statistics stay what they were
    await indexer.apply({"document_id": "a", "content": docs["a"], "sector": "banking"})
    assert await stats() == third


async def test_concurrent_writers_of_one_tenant_keep_the_statistics_exact(indexer, store, background):
    # documents sharing most of their words, written and deleted at once: their term rows are updated by several
    # transactions at once (a deadlock or a miscount would show here)
    docs = background(16)
    await asyncio.gather(*(indexer.apply(d) for d in docs))
    await asyncio.gather(*(indexer.apply({"document_id": d["document_id"], "op": "delete"}) for d in docs[::2]),
                         *(indexer.apply({**d, "content": d["content"] + " Fraud."}) for d in docs[1::2]))
    chunks = await tokens(store, indexer.index)
    assert {chunk_id.split("@")[0] for _, chunk_id in chunks} == {d["document_id"] for d in docs[1::2]}
    async with store.pool.acquire() as conn:
        stats = await corpus(conn, store.schema, indexer.index, ["default"], "fraud payment review outage")
    assert stats.chunks == len(chunks)
    assert stats.avgdl == sum(sum(c.values()) for c in chunks.values()) / len(chunks)
    assert stats.df == {t: sum(t in c for c in chunks.values()) for t in ("fraud", "payment", "review", "outag")}


async def test_one_tenants_statistics_do_not_move_another_tenants_scores(indexer, store, embedder):
    retriever = Retriever(store, embedder, indexer)
    await indexer.apply({"document_id": "rule", "tenant": "_shared", "metadata": shared_metadata(),
                         "content": "A payment outage is reported to the regulator within two hours."})
    await indexer.apply({"document_id": "own", "tenant": "globex",
                         "content": "Globex reports card fraud and payment outages to its risk desk."})
    await indexer.apply({"document_id": "own", "tenant": "acme",
                         "content": "Acme's treasury settles invoices every Friday."})
    query = "payment outage fraud"

    async def scores(tenant: str) -> dict[str, float]:
        hits = (await retriever.search(query, Filters(tenant), k=10, mode="keyword")).hits
        return {f"{h.tenant}/{h.document_id}": h.score for h in hits}

    globex, acme = await scores("globex"), await scores("acme")
    # acme fills its part of the index with the query's words, then deletes some of it again
    for i in range(12):
        await indexer.apply({"document_id": f"noise-{i}", "tenant": "acme",
                             "content": f"Payment outage number {i}: fraud, outage, payment, fraud."})
    await indexer.apply({"document_id": "noise-0", "tenant": "acme", "op": "delete"})
    assert await scores("globex") == globex  # the very same floats
    assert await scores("acme") != acme  # the control: acme's own statistics did change
    assert set(await scores("globex")) == {"_shared/rule", "globex/own"}


async def test_a_keyword_timeout_answers_dense_only_and_says_so(indexer, store, embedder, rag_settings):
    await indexer.apply({"document_id": "rule", "content": "A payment outage is reported within two hours."})
    retriever = Retriever(store, embedder, indexer, keyword_timeout_ms=300)
    timeouts = REGISTRY.get_sample_value("rag_keyword_timeouts_total") or 0.0
    dense = await retriever.search("payment outage", Filters("default"), mode="dense")
    # a writer holding the statistics table makes the keyword side wait past its budget
    locker = await asyncpg.connect(rag_settings.database_url)
    try:
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {store.schema}.keyword_terms IN ACCESS EXCLUSIVE MODE")
            for mode in ("hybrid", "keyword"):
                started = asyncio.get_running_loop().time()
                result = await retriever.search("payment outage", Filters("default"), mode=mode)
                assert asyncio.get_running_loop().time() - started < 2
                assert result.keyword_timed_out
                assert [h.chunk_id for h in result.hits] == [h.chunk_id for h in dense.hits]
    finally:
        await locker.close()
    assert REGISTRY.get_sample_value("rag_keyword_timeouts_total") == timeouts + 2
    assert not (await retriever.search("payment outage", Filters("default"))).keyword_timed_out


async def test_a_keyword_only_find_survives_the_relevance_cut(indexer, store, embedder, background):
    for doc in background(30):
        await indexer.apply(doc)
    # an identifier mentioned in passing: the passage as a whole is about something else
    await indexer.apply({"document_id": "handover", "title": "Shift handover",
                         "content": "The duty officer signs off a manual override within one hour and records it in "
                                    "the shift log; overrides are reviewed weekly by the operations manager under "
                                    "code QX-7731."})
    retriever = Retriever(store, embedder, indexer)
    result = await retriever.search("QX-7731", Filters("default"), k=4)
    [found] = [h for h in result.hits if h.document_id == "handover"]
    assert found.similarity < 0.3  # the cosine cut alone would drop it
    assert found in result.grounding(0.3)
    assert [h.document_id for h in result.grounding(0.3)] == ["handover"]  # and nothing else passes with it
