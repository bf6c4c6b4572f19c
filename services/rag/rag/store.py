"""The service's tables in PostgreSQL: documents, the index registry and one chunk table per index.

Each index (embedder name + version + chunking config) has its own chunk table with its own vector dimension,
HNSW index and full-text index, so a new embedder builds beside the old one and a query never mixes vectors of
two models. Tables are created idempotently at start, under an advisory lock so concurrent starts do not race.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from .chunking import ChunkingConfig

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DDL_LOCK = 7_000_003  # advisory lock id for schema changes


@dataclass(frozen=True)
class Filters:
    """`tenant` also sees the shared documents of tenant "default"."""
    tenant: str | None = None
    sector: str | None = None
    doc_type: str | None = None

    def tenants(self) -> list[str] | None:
        return None if self.tenant is None else sorted({self.tenant, "default"})


@dataclass(frozen=True)
class IndexInfo:
    version: str
    table: str
    embedder_name: str
    embedder_version: str
    dim: int
    chunking: dict


def index_version(embedder_name: str, embedder_version: str, chunking: ChunkingConfig) -> str:
    return f"{embedder_name}@{embedder_version}/{chunking.version}"


CHUNK_COLUMNS = ("chunk_id, document_id, ordinal, text, char_start, char_end, title, source_uri, tenant, sector, "
                 "doc_type, content_hash, ingested_at")


class Store:
    def __init__(self, pool: asyncpg.Pool, schema: str):
        self.pool = pool
        self.schema = schema

    @classmethod
    async def connect(cls, dsn: str, schema: str, min_size: int = 1, max_size: int = 5) -> Store:
        if not _IDENT.match(schema):
            raise ValueError(f"not a plain schema name: {schema!r}")
        setup = await asyncpg.connect(dsn)
        try:  # the extension must exist before connections register the vector codec
            await setup.execute("CREATE EXTENSION IF NOT EXISTS vector")
        finally:
            await setup.close()

        async def init(conn: asyncpg.Connection) -> None:
            await register_vector(conn)
            # filtered HNSW scans keep scanning until enough rows pass the filter (pgvector >= 0.8)
            await conn.execute("SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100")

        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init)
        store = cls(pool, schema)
        await store._create_base()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def _create_base(self) -> None:
        s = self.schema
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({_DDL_LOCK})")
            await conn.execute(f"""
                CREATE SCHEMA IF NOT EXISTS {s};
                CREATE TABLE IF NOT EXISTS {s}.documents (
                    document_id  text PRIMARY KEY,
                    source_uri   text NOT NULL,
                    title        text NOT NULL DEFAULT '',
                    content      text NOT NULL,
                    content_hash text NOT NULL,
                    tenant       text NOT NULL,
                    sector       text,
                    doc_type     text,
                    metadata     jsonb NOT NULL DEFAULT '{{}}',
                    updated_at   timestamptz NOT NULL,
                    ingested_at  timestamptz NOT NULL DEFAULT now());
                CREATE TABLE IF NOT EXISTS {s}.indexes (
                    index_version    text PRIMARY KEY,
                    table_name       text NOT NULL UNIQUE,
                    embedder_name    text NOT NULL,
                    embedder_version text NOT NULL,
                    dim              int NOT NULL,
                    chunking         jsonb NOT NULL,
                    doc_count        int NOT NULL DEFAULT 0,
                    chunk_count      int NOT NULL DEFAULT 0,
                    active           boolean NOT NULL DEFAULT false,
                    created_at       timestamptz NOT NULL DEFAULT now(),
                    built_at         timestamptz,
                    build_seconds    double precision,
                    updated_at       timestamptz NOT NULL DEFAULT now());""")

    async def open_index(self, embedder_name: str, embedder_version: str, dim: int,
                         chunking: ChunkingConfig) -> tuple[IndexInfo, bool]:
        """Registers (if new) and activates the index of this embedder and chunking; True when it is new."""
        version = index_version(embedder_name, embedder_version, chunking)
        table = "chunks_" + hashlib.sha256(version.encode()).hexdigest()[:12]
        s, t = self.schema, table
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({_DDL_LOCK})")
            created = await conn.fetchval(f"""
                INSERT INTO {s}.indexes (index_version, table_name, embedder_name, embedder_version, dim, chunking)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
                version, table, embedder_name, embedder_version, dim, json.dumps(chunking.as_dict()))
            await conn.execute(f"""
                CREATE TABLE IF NOT EXISTS {s}.{t} (
                    chunk_id     text PRIMARY KEY,
                    document_id  text NOT NULL,
                    ordinal      int NOT NULL,
                    text         text NOT NULL,
                    char_start   int NOT NULL,
                    char_end     int NOT NULL,
                    title        text NOT NULL DEFAULT '',
                    source_uri   text NOT NULL,
                    tenant       text NOT NULL,
                    sector       text,
                    doc_type     text,
                    content_hash text NOT NULL,
                    ingested_at  timestamptz NOT NULL,
                    embedding    vector({int(dim)}) NOT NULL,
                    tsv tsvector GENERATED ALWAYS AS
                        (setweight(to_tsvector('english', title), 'A') || to_tsvector('english', text)) STORED);
                CREATE INDEX IF NOT EXISTS {t}_hnsw ON {s}.{t} USING hnsw (embedding vector_cosine_ops);
                CREATE INDEX IF NOT EXISTS {t}_tsv ON {s}.{t} USING gin (tsv);
                CREATE INDEX IF NOT EXISTS {t}_doc ON {s}.{t} (document_id, content_hash);
                CREATE INDEX IF NOT EXISTS {t}_tenant ON {s}.{t} (tenant);""")
            await conn.execute(f"UPDATE {s}.indexes SET active = (index_version = $1)", version)
        return IndexInfo(version, table, embedder_name, embedder_version, dim, chunking.as_dict()), bool(created)

    # --- documents -------------------------------------------------------------------------------------

    async def get_document(self, document_id: str, conn: asyncpg.Connection | None = None) -> asyncpg.Record | None:
        q = f"SELECT * FROM {self.schema}.documents WHERE document_id = $1"
        if conn is not None:
            return await conn.fetchrow(q, document_id)
        return await self.pool.fetchrow(q, document_id)

    async def has_chunks(self, index: IndexInfo, document_id: str, content_hash: str) -> bool:
        return bool(await self.pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {self.schema}.{index.table} WHERE document_id = $1 AND content_hash = $2)",
            document_id, content_hash))

    async def documents_missing_from(self, index: IndexInfo) -> list[asyncpg.Record]:
        """Documents whose current content is not (yet) in `index`: what a new or interrupted build still needs."""
        return await self.pool.fetch(f"""
            SELECT * FROM {self.schema}.documents d WHERE content <> '' AND NOT EXISTS (
                SELECT 1 FROM {self.schema}.{index.table} c
                WHERE c.document_id = d.document_id AND c.content_hash = d.content_hash)
            ORDER BY document_id""")

    async def write_document(self, index: IndexInfo, doc: dict, chunks: list[dict] | None,
                             embeddings: np.ndarray | None) -> str:
        """Stores `doc` and, when `chunks` is given, replaces its chunks in `index`; atomic, serialised per
        document. Returns created, updated, metadata, unchanged or stale (an older version than the stored one)."""
        s, t = self.schema, index.table
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", doc["document_id"])
            old = await self.get_document(doc["document_id"], conn)
            if old is not None and old["updated_at"] > doc["updated_at"]:
                return "stale"
            if old is not None and old["content_hash"] != doc["content_hash"] and chunks is None:
                raise RuntimeError("content changed while it was being embedded; retry")
            same_meta = old is not None and all(old[k] == doc[k] for k in
                                                ("source_uri", "title", "tenant", "sector", "doc_type")) \
                and json.loads(old["metadata"]) == doc["metadata"]
            await conn.execute(f"""
                INSERT INTO {s}.documents (document_id, source_uri, title, content, content_hash, tenant, sector,
                                           doc_type, metadata, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (document_id) DO UPDATE SET source_uri = $2, title = $3, content = $4,
                    content_hash = $5, tenant = $6, sector = $7, doc_type = $8, metadata = $9, updated_at = $10,
                    ingested_at = CASE WHEN {s}.documents.content_hash = $5 THEN {s}.documents.ingested_at
                                       ELSE now() END""",
                doc["document_id"], doc["source_uri"], doc["title"], doc["content"], doc["content_hash"],
                doc["tenant"], doc["sector"], doc["doc_type"], json.dumps(doc["metadata"]), doc["updated_at"])
            if chunks is None:
                if not same_meta:  # same content, new metadata: chunks keep their vectors
                    await conn.execute(f"""
                        UPDATE {s}.{t} SET source_uri = $2, title = $3, tenant = $4, sector = $5, doc_type = $6
                        WHERE document_id = $1""", doc["document_id"], doc["source_uri"], doc["title"],
                        doc["tenant"], doc["sector"], doc["doc_type"])
                return "unchanged" if same_meta else "metadata"
            removed = await self._delete_chunks(conn, t, doc["document_id"])
            ingested_at = await conn.fetchval(f"SELECT ingested_at FROM {s}.documents WHERE document_id = $1",
                                              doc["document_id"])
            await conn.copy_records_to_table(
                t, schema_name=s, columns=[*CHUNK_COLUMNS.split(", "), "embedding"],
                records=[(c["chunk_id"], doc["document_id"], c["ordinal"], c["text"], c["start"], c["end"],
                          doc["title"], doc["source_uri"], doc["tenant"], doc["sector"], doc["doc_type"],
                          doc["content_hash"], ingested_at, e) for c, e in zip(chunks, embeddings)])
            await conn.execute(f"""
                UPDATE {s}.indexes SET chunk_count = chunk_count + $2, doc_count = doc_count + $3,
                    updated_at = now() WHERE index_version = $1""",
                index.version, len(chunks) - removed, int(removed == 0 and len(chunks) > 0))
            return "created" if old is None else "updated"

    async def documents_under(self, source_uri_prefix: str) -> list[str]:
        """Ids of the documents whose source URI starts with the prefix (those loaded from one folder)."""
        rows = await self.pool.fetch(f"SELECT document_id FROM {self.schema}.documents WHERE starts_with(source_uri, $1)",
                                     source_uri_prefix)
        return sorted(r["document_id"] for r in rows)

    async def delete_document(self, document_id: str) -> bool:
        """Removes the document and its chunks (vectors and keyword entries live in the same rows) from every
        index, old ones included: a deletion leaves no trace anywhere."""
        s = self.schema
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", document_id)
            found = await conn.fetchval(f"DELETE FROM {s}.documents WHERE document_id = $1 RETURNING true",
                                        document_id)
            for row in await conn.fetch(f"SELECT index_version, table_name FROM {s}.indexes"):
                removed = await self._delete_chunks(conn, row["table_name"], document_id)
                if removed:
                    await conn.execute(f"""
                        UPDATE {s}.indexes SET chunk_count = chunk_count - $2, doc_count = doc_count - 1,
                            updated_at = now() WHERE index_version = $1""", row["index_version"], removed)
            return bool(found)

    async def _delete_chunks(self, conn: asyncpg.Connection, table: str, document_id: str) -> int:
        status = await conn.execute(f"DELETE FROM {self.schema}.{table} WHERE document_id = $1", document_id)
        return int(status.split()[-1])

    async def mark_built(self, index: IndexInfo, seconds: float) -> None:
        await self.pool.execute(f"""
            UPDATE {self.schema}.indexes SET built_at = now(), build_seconds = coalesce(build_seconds, 0) + $2
            WHERE index_version = $1""", index.version, seconds)

    async def indexes(self) -> list[dict]:
        rows = await self.pool.fetch(f"SELECT * FROM {self.schema}.indexes ORDER BY created_at")
        return [{**dict(r), "chunking": json.loads(r["chunking"])} for r in rows]

    # --- chunks ----------------------------------------------------------------------------------------

    async def chunk(self, index: IndexInfo, chunk_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT {CHUNK_COLUMNS} FROM {self.schema}.{index.table} WHERE chunk_id = $1", chunk_id)

    async def chunks_of(self, index: IndexInfo, document_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"SELECT {CHUNK_COLUMNS} FROM {self.schema}.{index.table} WHERE document_id = $1 "
            "ORDER BY ordinal", document_id)

    def _where(self, filters: Filters, first: int) -> tuple[str, list]:
        clauses, args = [], []
        for column, value in (("tenant", filters.tenants()), ("sector", filters.sector),
                              ("doc_type", filters.doc_type)):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ANY(${first + len(args) - 1})" if column == "tenant"
                               else f"{column} = ${first + len(args) - 1}")
        return (" AND ".join(clauses) or "true"), args

    async def dense(self, index: IndexInfo, vector: np.ndarray, filters: Filters, n: int) -> list[asyncpg.Record]:
        where, args = self._where(filters, 3)
        return await self.pool.fetch(f"""
            SELECT {CHUNK_COLUMNS}, 1 - (embedding <=> $1) AS similarity FROM {self.schema}.{index.table}
            WHERE {where} ORDER BY embedding <=> $1 LIMIT $2""", vector, n, *args)

    async def keyword(self, index: IndexInfo, query: str, vector: np.ndarray, filters: Filters,
                      n: int) -> list[asyncpg.Record]:
        """BM25 over PostgreSQL full-text lexemes. Candidates are the best rows of each query term on its own
        (a rare term is never crowded out by common ones), then scored with the terms' document frequencies;
        avgdl is taken over the candidates. `coverage` is the score over the best score the query could get (every
        term once in an average-length passage): how much of the query's IDF mass a hit holds. The cosine
        similarity comes along, so that one relevance threshold applies to hits of either side."""
        where, args = self._where(filters, 4)
        s, t = self.schema, index.table
        return await self.pool.fetch(f"""
            WITH terms AS (
                SELECT DISTINCT lexeme, plainto_tsquery('simple', lexeme) AS q
                FROM unnest(to_tsvector('english', $1))),
            df AS (
                SELECT lexeme, (SELECT count(*) FROM {s}.{t} WHERE tsv @@ terms.q) AS n FROM terms),
            candidates AS (
                SELECT DISTINCT best.chunk_id FROM terms, LATERAL (
                    SELECT chunk_id FROM {s}.{t} WHERE tsv @@ terms.q AND {where}
                    ORDER BY ts_rank(tsv, terms.q) DESC LIMIT $2) best),
            rows AS (
                SELECT c.*, length(c.tsv) AS dl FROM {s}.{t} c JOIN candidates USING (chunk_id)),
            corpus AS (
                SELECT greatest(chunk_count, 1) AS n_docs, (SELECT avg(dl) FROM rows) AS avgdl
                FROM {s}.indexes WHERE table_name = '{t}'),
            scored AS (
                SELECT r.chunk_id, sum(ln(1 + (corpus.n_docs - df.n + 0.5) / (df.n + 0.5))
                        * u.tf * 2.2 / (u.tf + 1.2 * (0.25 + 0.75 * r.dl / corpus.avgdl))) AS rank
                FROM rows r, corpus,
                     LATERAL (SELECT lexeme, cardinality(positions) AS tf FROM unnest(r.tsv)) u
                     JOIN df USING (lexeme)
                GROUP BY r.chunk_id)
            SELECT {CHUNK_COLUMNS}, 1 - (embedding <=> $3) AS similarity, scored.rank,
                   scored.rank / (SELECT sum(ln(1 + (n_docs - df.n + 0.5) / (df.n + 0.5)) * 2.2)
                                  FROM df, corpus) AS coverage
            FROM rows JOIN scored USING (chunk_id) ORDER BY scored.rank DESC LIMIT $2""",
            query, n, vector, *args)

def chunk_id(document_id: str, content_hash: str, ordinal: int) -> str:
    """Stable for the same content, new for new content: a citation keeps pointing at what was cited."""
    return f"{document_id}@{content_hash[:12]}-{ordinal}"
