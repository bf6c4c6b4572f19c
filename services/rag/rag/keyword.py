"""Keyword retrieval: exact Okapi BM25 over the chunks' lexemes, from statistics the database keeps up to date.

Triggers on every chunk table (migrations/0003_keyword_statistics.sql) keep, per tenant and in the writing
transaction, the chunk and token counts, each lexeme's document frequency and impact-ordered postings. A caller's
corpus is what it may see: N, avgdl and df are summed over its tenant and the shared one, so another tenant's
chunks never move its scores, and every replica reads the same figures. Tokens are the lexeme positions of a
chunk's `tsv` (title and text, english configuration); a query counts each of its lexemes once.

The top n is found without reading every posting of a common term: each pass scores a bounded set of candidates
exactly and proves that no other chunk can beat its n-th, else the next, wider pass runs:
1. the first postings of each term in impact order (tf descending, shorter chunks first); an unread posting weighs
   at most the last one read, or one occurrence fewer in the shortest chunk holding the term;
2. the best chunks by their terms of real weight alone, leaving out terms too common to matter (an idf near 0)
   whose weight is then bounded by its maximum;
3. every chunk holding a query term: exact by construction.
All passes read one snapshot (a read-only repeatable-read transaction) under a statement timeout that is the
remaining budget of the whole search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
from prometheus_client import Counter

from .store import CHUNK_COLUMNS, Filters, IndexInfo, filter_clause

K1 = 1.2
B = 0.75
# terms whose weights together stay under this share of the query's may be left out of pass 2's candidate search
NEGLIGIBLE_SHARE = 0.01

DECIDED = Counter("rag_keyword_decided_total", "Keyword searches by the candidate pass that proved them exact",
                  ["pass"])  # prefix, essential, exhaustive
TIMEOUTS = Counter("rag_keyword_timeouts_total", "Keyword searches stopped by their timeout (answered dense-only)")


class KeywordTimeout(Exception):
    pass


@dataclass(frozen=True)
class Corpus:
    """The BM25 statistics of the chunks one caller may see, for the query's terms."""
    chunks: int
    avgdl: float
    df: dict[str, int]  # 0 for a term in none of the chunks
    min_dl: dict[str, int]  # a lower bound of the length of the chunks holding each term

    def found(self) -> list[str]:
        """The terms in at least one chunk, commonest first."""
        return sorted((t for t, n in self.df.items() if n), key=self.idf)

    def idf(self, term: str) -> float:
        df = self.df[term]
        return math.log(1 + (self.chunks - df + 0.5) / (df + 0.5))

    def weight(self, tf: float, dl: float) -> float:
        """A term's BM25 weight before idf."""
        return tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / self.avgdl))

    def ceiling(self) -> float:
        """The score no chunk can reach: every term of the query, those in no chunk too, with unbounded frequency
        (its weight tends to k1 + 1)."""
        return sum(self.idf(t) for t in self.df) * (K1 + 1)


async def corpus(conn: asyncpg.Connection, schema: str, index: IndexInfo, tenants: Sequence[str],
                 query: str) -> Corpus:
    rows = await conn.fetch(f"""
        WITH q AS (SELECT DISTINCT lexeme AS term FROM unnest(to_tsvector('english', $1)))
        SELECT q.term, coalesce(sum(t.df), 0) AS df, min(t.min_dl) AS min_dl,
               (SELECT row(coalesce(sum(chunks), 0), coalesce(sum(tokens), 0)) FROM {schema}.keyword_corpus
                WHERE index_table = $2 AND tenant = ANY($3)) AS size
        FROM q LEFT JOIN {schema}.keyword_terms t ON t.index_table = $2 AND t.tenant = ANY($3) AND t.term = q.term
        GROUP BY q.term""", query, index.table, list(tenants))
    chunks, tokens = rows[0]["size"] if rows else (0, 0)
    return Corpus(int(chunks), float(tokens) / max(int(chunks), 1), {r["term"]: int(r["df"]) for r in rows},
                  {r["term"]: int(r["min_dl"]) for r in rows if r["df"]})


class _Budget:
    """Arms the statement timeout of the next statement with what is left of the search's budget."""

    def __init__(self, conn: asyncpg.Connection, timeout_ms: int):
        self.conn = conn
        self.deadline = time.monotonic() + timeout_ms / 1000

    async def arm(self) -> None:
        left = int((self.deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise KeywordTimeout
        await self.conn.execute(f"SET LOCAL statement_timeout = {left}")


class KeywordSearch:
    def __init__(self, pool: asyncpg.Pool, schema: str, timeout_ms: int):
        self.pool = pool
        self.schema = schema
        self.timeout_ms = timeout_ms

    async def search(self, index: IndexInfo, query: str, vector: np.ndarray, filters: Filters,
                     n: int) -> list[dict]:
        """The n best chunks by BM25, best first, each with its `rank`, its `coverage` (rank over the query's
        ceiling: how much of the query's IDF mass it holds) and its cosine `similarity` to `vector`."""
        try:
            async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                budget = _Budget(conn, self.timeout_ms)
                await budget.arm()
                stats = await corpus(conn, self.schema, index, filters.tenants(), query)
                if not stats.found():
                    return []
                rows = await self._top(conn, budget, index, stats, vector, filters, n)
        except asyncpg.QueryCanceledError as e:
            TIMEOUTS.inc()
            raise KeywordTimeout from e
        except KeywordTimeout:
            TIMEOUTS.inc()
            raise
        ceiling = stats.ceiling()
        return [{**r, "coverage": r["rank"] / ceiling} for r in rows]

    async def _top(self, conn: asyncpg.Connection, budget: _Budget, index: IndexInfo, stats: Corpus,
                   vector: np.ndarray, filters: Filters, n: int) -> list[dict]:
        terms = stats.found()
        idfs = [stats.idf(t) for t in terms]
        negligible, total = 0, 0.0
        for idf in idfs:  # the rarest terms come last: leave out the common ones while their weight is negligible
            total += idf
            if total > NEGLIGIBLE_SHARE * sum(idfs):
                break
            negligible += 1
        passes = [("prefix", terms, 2 * n)]
        if negligible:
            passes.append(("essential", terms[negligible:], 2 * n))
        passes.append(("exhaustive", terms, n))
        for name, used, depth in passes:
            await budget.arm()
            if name == "prefix":
                candidates, bound = await self._prefix(conn, index, stats, filters, used, depth)
            else:
                candidates, bound = await self._leaders(conn, index, stats, filters, used, depth)
                bound += sum(stats.idf(t) for t in terms if t not in used) * (K1 + 1)
            await budget.arm()
            rows = await self._score(conn, index, stats, terms, idfs, candidates, vector, filters, n)
            if name == "exhaustive" or bound <= 0 or (len(rows) == n and rows[-1]["rank"] >= bound):
                DECIDED.labels(name).inc()
                return rows
        raise AssertionError("the exhaustive pass always decides")

    async def _prefix(self, conn: asyncpg.Connection, index: IndexInfo, stats: Corpus, filters: Filters,
                      terms: list[str], depth: int) -> tuple[list[tuple[str, str]], float]:
        """The first `depth` postings of each (tenant, term), and a bound on the score of any chunk outside them."""
        rows = await conn.fetch(f"""
            SELECT v.tenant, q.term, p.chunk_id, p.tf, p.dl
            FROM unnest($2::text[]) v(tenant), unnest($3::text[]) q(term), LATERAL (
                SELECT chunk_id, tf, dl FROM {self.schema}.keyword_postings p
                WHERE p.index_table = $1 AND p.tenant = v.tenant AND p.term = q.term
                ORDER BY tf DESC, dl, chunk_id LIMIT $4) p""", index.table, filters.tenants(), terms, depth)
        last: dict[tuple[str, str], tuple[int, int, int]] = {}
        for r in rows:  # in impact order within each list
            key = (r["tenant"], r["term"])
            last[key] = (r["tf"], r["dl"], last.get(key, (0, 0, 0))[2] + 1)
        bounds: dict[str, float] = {}
        for (tenant, term), (tf, dl, read) in last.items():
            if read < depth:
                continue  # the whole list was read
            unread = stats.weight(tf, dl)
            if tf > 1:
                unread = max(unread, stats.weight(tf - 1, stats.min_dl[term]))
            bounds[tenant] = bounds.get(tenant, 0.0) + stats.idf(term) * unread
        candidates = sorted({(r["tenant"], r["chunk_id"]) for r in rows})
        return candidates, max(bounds.values(), default=0.0)

    async def _leaders(self, conn: asyncpg.Connection, index: IndexInfo, stats: Corpus, filters: Filters,
                       terms: list[str], depth: int) -> tuple[list[tuple[str, str]], float]:
        """The `depth` chunks passing the filters with the best score over `terms` alone, and a bound on that
        partial score for every other chunk (0 when every chunk holding one of the terms is among them)."""
        where, args = filter_clause(filters, 5, "c.")
        join = "" if (filters.sector, filters.doc_type) == (None, None) else \
            f"JOIN {self.schema}.{index.table} c ON c.tenant = p.tenant AND c.chunk_id = p.chunk_id AND {where}"
        rows = await conn.fetch(f"""
            SELECT p.tenant, p.chunk_id, sum(q.idf * {_weight('p.tf', 'p.dl', '$4')}) AS partial
            FROM {self.schema}.keyword_postings p JOIN unnest($2::text[], $3::float8[]) q(term, idf) USING (term)
            {join}
            WHERE p.index_table = $1 AND p.tenant = ANY($5) AND p.term = ANY($2)
            GROUP BY 1, 2 ORDER BY partial DESC LIMIT {int(depth)}""",
            index.table, terms, [stats.idf(t) for t in terms], stats.avgdl, *args)
        bound = rows[-1]["partial"] if len(rows) == depth else 0.0
        return [(r["tenant"], r["chunk_id"]) for r in rows], bound

    async def _score(self, conn: asyncpg.Connection, index: IndexInfo, stats: Corpus, terms: list[str],
                     idfs: list[float], candidates: list[tuple[str, str]], vector: np.ndarray, filters: Filters,
                     n: int) -> list[dict]:
        """The exact BM25 of the candidates passing the filters, from their own lexemes; the n best."""
        where, args = filter_clause(filters, 8, "c.")
        columns = ", ".join(f"c.{col}" for col in CHUNK_COLUMNS.split(", "))
        rows = await conn.fetch(f"""
            SELECT {columns}, 1 - (c.embedding <=> $7) AS similarity, s.rank
            FROM unnest($1::text[], $2::text[]) k(tenant, chunk_id)
            JOIN {self.schema}.{index.table} c ON c.tenant = k.tenant AND c.chunk_id = k.chunk_id,
            LATERAL (SELECT sum(cardinality(positions)) AS dl FROM unnest(c.tsv)) d,
            LATERAL (SELECT sum(q.idf * {_weight('cardinality(u.positions)', 'd.dl', '$5')}) AS rank
                     FROM unnest(c.tsv) u JOIN unnest($3::text[], $4::float8[]) q(term, idf)
                     ON q.term = u.lexeme) s
            WHERE {where}
            ORDER BY s.rank DESC, c.tenant, c.chunk_id LIMIT $6""",
            [t for t, _ in candidates], [c for _, c in candidates], terms, idfs, stats.avgdl, n, vector, *args)
        return [dict(r) for r in rows]


def _weight(tf: str, dl: str, avgdl: str) -> str:
    """The SQL of `Corpus.weight`."""
    return f"{tf}::float8 * {K1 + 1} / ({tf} + {K1} * ({1 - B} + {B} * {dl} / {avgdl}::float8))"
