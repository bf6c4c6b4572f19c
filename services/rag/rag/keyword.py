"""Keyword retrieval: exact Okapi BM25 over the chunks' lexemes, from statistics the database keeps up to date.

Triggers on every chunk table (migrations/0003_keyword_statistics.sql) keep, per tenant and in the writing
transaction, the chunk and token counts, each lexeme's document frequency and impact-ordered postings. A caller's
corpus is what it may see: N, avgdl and df are summed over its tenant and the shared one, so another tenant's
chunks never move its scores, and every replica reads the same figures. Tokens are the lexeme positions of a
chunk's `tsv` (title and text, english configuration); a query counts each of its lexemes once.

The top n is found without reading every posting of a common term. Each pass reads some postings of each term in
impact order (tf descending, shorter chunks first) and bounds every chunk's score from above: the weights it was
seen with, plus for each other term the most an unread posting can weigh (as much as the last one read, or one
occurrence fewer in the shortest chunk holding the term). The chunks with the best bounds are scored exactly, 2n
first, then twice as many each time; once no other chunk's bound exceeds the n-th score, that top n is exact BM25,
else the next pass reads more:
1. prefix: the first 2n postings of each (tenant, term);
2. segment: every posting down to the frequencies where pass 1 stopped (in the database, which returns the
   MAX_CANDIDATES n best bounds): chunks that hold several terms rise above those holding one;
3. exhaustive: every posting, first without the terms too common to matter (an idf near 0, bounded by their
   heaviest posting), last with them: exact by construction.
Passes 2 and 3 leave out the terms too common to matter until the very last.
All passes read one snapshot (a read-only repeatable-read transaction) under a statement timeout that is the
remaining budget of the whole search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from .store import CHUNK_COLUMNS, Filters, IndexInfo, filter_clause

K1 = 1.2
B = 0.75
# terms whose weights together stay under this share of the query's may be left out of pass 2's candidate search
NEGLIGIBLE_SHARE = 0.01
# a pass scores at most this many times n candidates, in order of their bounds: 2n first, then twice as many as
# the time before (chunks that tie on their bounds, as in a corpus of equal-length chunks, are scored together)
MAX_CANDIDATES = 32

DECIDED = Counter("rag_keyword_decided_total", "Keyword searches by the candidate pass that proved them exact",
                  ["pass"])  # prefix, segment, exhaustive
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

    async def search(self, index: IndexInfo, query: str, filters: Filters, n: int) -> list[dict]:
        """The n best chunks by BM25, best first, each with its `rank`, its `coverage` (rank over the query's
        ceiling: how much of the query's IDF mass it holds) and its `embedding`. The query's vector is not needed:
        the search runs while the query is being embedded."""
        try:
            async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                budget = _Budget(conn, self.timeout_ms)
                await budget.arm()
                stats = await corpus(conn, self.schema, index, filters.tenants(), query)
                if not stats.found():
                    return []
                rows = await self._top(conn, budget, index, stats, filters, n)
        except asyncpg.QueryCanceledError as e:
            TIMEOUTS.inc()
            raise KeywordTimeout from e
        except KeywordTimeout:
            TIMEOUTS.inc()
            raise
        ceiling = stats.ceiling()
        return [{**r, "coverage": r["rank"] / ceiling} for r in rows]

    async def _top(self, conn: asyncpg.Connection, budget: _Budget, index: IndexInfo, stats: Corpus,
                   filters: Filters, n: int) -> list[dict]:
        terms = stats.found()
        idfs = [stats.idf(t) for t in terms]
        negligible, total = 0, 0.0
        for idf in idfs:  # the commonest terms come first: leave them unread while their weight is negligible
            total += idf
            if total > NEGLIGIBLE_SHARE * sum(idfs):
                break
            negligible += 1
        await budget.arm()
        ranked, rest, cut, most = await self._prefix(conn, index, stats, filters, terms, 2 * n)
        read = terms[negligible:]
        others = sum(most[t] for t in terms[:negligible])  # the unread terms' weight, at most
        passes: list[tuple[str, dict[str, int], float]] = [("segment", {t: cut[t] for t in read}, others)]
        if negligible:
            passes.append(("exhaustive", {t: 1 for t in read}, others))
        passes.append(("exhaustive", {t: 1 for t in terms}, 0.0))
        name, scored = "prefix", {}
        while True:
            # the candidates in order of their bounds until the n-th score reaches the next bound
            start, size = 0, 2 * n
            while start < len(ranked):
                await budget.arm()
                batch = [key for key, _ in ranked[start:start + size]]
                for row in await self._score(conn, index, stats, terms, idfs, batch, filters, n):
                    scored[row["tenant"], row["chunk_id"]] = row
                rows = sorted(scored.values(), key=lambda r: (-r["rank"], r["tenant"], r["chunk_id"]))[:n]
                start, size = start + size, 2 * size
                bound = max(ranked[start][1] if start < len(ranked) else 0.0, rest)
                # scores equal within float rounding are ties, and either of two tied chunks is right
                if len(rows) == n and bound <= rows[-1]["rank"] * (1 + 1e-9) or bound <= 0 or not passes:
                    DECIDED.labels(name).inc()
                    return rows
            if not passes:  # the last pass found no chunk passing the filters
                DECIDED.labels(name).inc()
                return []
            name, tf_cut, others = passes.pop(0)
            await budget.arm()
            ranked, rest = await self._segments(conn, index, stats, filters, tf_cut, others, MAX_CANDIDATES * n)

    def _unread(self, stats: Corpus, term: str, tf: int, dl: int | None = None) -> float:
        """The most a posting of `term` after one of frequency `tf` (and length `dl`) in impact order can weigh:
        as much as that one, or one occurrence fewer in the shortest chunk holding the term."""
        most = stats.weight(tf, dl) if dl is not None else 0.0
        if tf > 1:
            most = max(most, stats.weight(tf - 1, stats.min_dl[term]))
        return stats.idf(term) * most

    def _leaders(self, bounds: dict[tuple[str, str], float], others: float,
                 depth: int) -> tuple[list[tuple[tuple[str, str], float]], float]:
        """The `depth` chunks with the best upper bounds (their seen weights plus the most their unread postings
        weigh), best first, and a bound on every other chunk's score."""
        ranked = sorted(bounds.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:depth], max(ranked[depth][1] if len(ranked) > depth else 0.0, others)

    async def _prefix(self, conn: asyncpg.Connection, index: IndexInfo, stats: Corpus, filters: Filters,
                      terms: list[str],
                      depth: int) -> tuple[list[tuple[tuple[str, str], float]], float, dict[str, int],
                                           dict[str, float]]:
        """Pass 1: the first `depth` postings of each (tenant, term) in impact order. Also returns, per term, the
        frequency down to which its postings were read (1 for a term read entirely), which the next pass reads
        down to, and the most any of its postings weighs."""
        rows = await conn.fetch(f"""
            SELECT v.tenant, q.term, p.chunk_id, p.tf, p.dl
            FROM unnest($2::text[]) v(tenant), unnest($3::text[]) q(term), LATERAL (
                SELECT chunk_id, tf, dl FROM {self.schema}.keyword_postings p
                WHERE p.index_table = $1 AND p.tenant = v.tenant AND p.term = q.term
                ORDER BY tf DESC, dl, chunk_id LIMIT $4) p""", index.table, filters.tenants(), terms, depth)
        last: dict[tuple[str, str], tuple[int, int, int]] = {}
        most = {t: 0.0 for t in terms}
        for r in rows:  # in impact order within each list
            key = (r["tenant"], r["term"])
            if key not in last:
                most[r["term"]] = max(most[r["term"]], self._unread(stats, r["term"], r["tf"], r["dl"]))
            last[key] = (r["tf"], r["dl"], last.get(key, (0, 0, 0))[2] + 1)
        bound = {t: 0.0 for t in terms}  # per term, the most an unread posting weighs (in any tenant's list)
        cut = {t: 1 for t in terms}
        for (_, term), (tf, dl, count) in last.items():
            if count == depth:  # else the whole list was read
                bound[term] = max(bound[term], self._unread(stats, term, tf, dl))
                cut[term] = max(cut[term], tf)
        unread = sum(bound.values())
        partials: dict[tuple[str, str], float] = {}
        for r in rows:
            key = (r["tenant"], r["chunk_id"])
            seen = stats.idf(r["term"]) * stats.weight(r["tf"], r["dl"]) - bound[r["term"]]
            partials[key] = partials.get(key, unread) + seen
        return (*self._leaders(partials, unread, depth), cut, most)

    async def _segments(self, conn: asyncpg.Connection, index: IndexInfo, stats: Corpus, filters: Filters,
                        tf_cut: dict[str, int], others: float,
                        depth: int) -> tuple[list[tuple[tuple[str, str], float]], float]:
        """Pass 2 and after: every posting of the terms of `tf_cut` down to the frequency given, aggregated in the
        database, which returns the chunks passing the filters with the best upper bounds."""
        terms = list(tf_cut)
        bounds = [self._unread(stats, t, tf_cut[t]) for t in terms]
        unread = sum(bounds) + others
        where, args = filter_clause(filters, 8, "c.")
        join = "" if (filters.sector, filters.doc_type) == (None, None) else \
            f"JOIN {self.schema}.{index.table} c ON c.tenant = p.tenant AND c.chunk_id = p.chunk_id AND {where}"
        rows = await conn.fetch(f"""
            SELECT p.tenant, p.chunk_id, $6 + sum(q.idf * {_weight('p.tf', 'p.dl', '$5')} - q.bound) AS ub
            FROM unnest($2::text[], $3::float8[], $4::int[], $7::float8[]) q(term, idf, cut, bound)
            JOIN {self.schema}.keyword_postings p ON p.term = q.term AND p.tf >= q.cut
            {join}
            WHERE p.index_table = $1 AND p.tenant = ANY($8) AND p.term = ANY($2)
            GROUP BY 1, 2 ORDER BY ub DESC, 1, 2 LIMIT {int(depth) + 1}""",
            index.table, terms, [stats.idf(t) for t in terms], [tf_cut[t] for t in terms], stats.avgdl, unread,
            bounds, *args)
        return self._leaders({(r["tenant"], r["chunk_id"]): r["ub"] for r in rows}, unread, depth)

    async def _score(self, conn: asyncpg.Connection, index: IndexInfo, stats: Corpus, terms: list[str],
                     idfs: list[float], candidates: list[tuple[str, str]], filters: Filters, n: int) -> list[dict]:
        """The exact BM25 of the candidates passing the filters, from their own lexemes; the n best."""
        where, args = filter_clause(filters, 7, "c.")
        columns = ", ".join(f"c.{col}" for col in CHUNK_COLUMNS.split(", "))
        rows = await conn.fetch(f"""
            SELECT {columns}, c.embedding, s.rank
            FROM unnest($1::text[], $2::text[]) k(tenant, chunk_id)
            JOIN {self.schema}.{index.table} c ON c.tenant = k.tenant AND c.chunk_id = k.chunk_id,
            LATERAL (SELECT sum(cardinality(positions)) AS dl FROM unnest(c.tsv)) d,
            LATERAL (SELECT sum(q.idf * {_weight('cardinality(u.positions)', 'd.dl', '$5')}) AS rank
                     FROM unnest(c.tsv) u JOIN unnest($3::text[], $4::float8[]) q(term, idf)
                     ON q.term = u.lexeme) s
            WHERE {where}
            ORDER BY s.rank DESC, c.tenant, c.chunk_id LIMIT $6""",
            [t for t, _ in candidates], [c for _, c in candidates], terms, idfs, stats.avgdl, n, *args)
        return [dict(r) for r in rows]


def _weight(tf: str, dl: str, avgdl: str) -> str:
    """The SQL of `Corpus.weight`, in float8 throughout (numeric arithmetic is several times slower)."""
    return (f"{tf}::float8 * {K1 + 1}::float8 / ({tf}::float8 + {K1}::float8 * ({1 - B}::float8 + {B}::float8 "
            f"* {dl}::float8 / {avgdl}::float8))")
