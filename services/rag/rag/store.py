"""The service's tables in PostgreSQL: documents, the index registry and one chunk table per index.

Each index (embedder name + version + chunking config) has its own chunk table with its own vector dimension,
HNSW index and lexemes (`tsv`, with BM25 statistics kept by triggers: rag/keyword.py), so a new embedder builds
beside the old one and a query never mixes vectors of two models. Tables are created idempotently at start, under
an advisory lock so concurrent starts do not race.

Documents and chunks are keyed by (tenant, id): two tenants may use the same document id without touching each
other's rows, and every read names the tenants it may see (the caller's and the shared namespace). Tables made by
older versions are upgraded in place by the numbered SQL migrations in `migrations/`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from platform_common.auth import RESERVED_TENANT
from platform_common.migrations import migrate

from .chunking import ChunkingConfig

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DDL_LOCK = 7_000_003  # advisory lock id for schema changes
MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class Filters:
    """What one caller may retrieve: its tenant's chunks and the shared reference documents, never another
    tenant's (the tenant is required: there is no unfiltered read)."""
    tenant: str
    sector: str | None = None
    doc_type: str | None = None

    def __post_init__(self) -> None:
        if not self.tenant:
            raise ValueError("a retrieval needs the caller's tenant")

    def tenants(self) -> list[str]:
        return visible_tenants(self.tenant)


def visible_tenants(tenant: str) -> list[str]:
    return sorted({tenant, RESERVED_TENANT})


def filter_clause(filters: Filters, first: int, prefix: str = "") -> tuple[str, list]:
    """The SQL condition of `filters` on a chunk table (columns named with `prefix`) and its arguments, numbered
    from `first`; the tenant clause always comes first, with the visible tenants as argument `first`."""
    clauses = [f"{prefix}tenant = ANY(${first})"]
    args: list[Any] = [filters.tenants()]
    for column, value in (("sector", filters.sector), ("doc_type", filters.doc_type)):
        if value is not None:
            args.append(value)
            clauses.append(f"{prefix}{column} = ${first + len(args) - 1}")
    return " AND ".join(clauses), args


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
        async with self.pool.acquire() as conn:
            await migrate(conn, self.schema, MIGRATIONS)

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
                    chunk_id     text NOT NULL,
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
                        (setweight(to_tsvector('english', title), 'A') || to_tsvector('english', text)) STORED,
                    PRIMARY KEY (tenant, chunk_id));
                CREATE INDEX IF NOT EXISTS {t}_hnsw ON {s}.{t} USING hnsw (embedding vector_cosine_ops);
                CREATE INDEX IF NOT EXISTS {t}_tsv ON {s}.{t} USING gin (tsv);
                CREATE INDEX IF NOT EXISTS {t}_tdoc ON {s}.{t} (tenant, document_id, content_hash);""")
            await conn.execute(f"SELECT {s}.keyword_attach($1)", t)  # BM25 statistics (rag/keyword.py)
            await conn.execute(f"UPDATE {s}.indexes SET active = (index_version = $1)", version)
        return IndexInfo(version, table, embedder_name, embedder_version, dim, chunking.as_dict()), bool(created)

    # --- documents -------------------------------------------------------------------------------------

    async def get_document(self, tenant: str, document_id: str,
                           conn: asyncpg.Connection | None = None) -> asyncpg.Record | None:
        q = f"SELECT * FROM {self.schema}.documents WHERE tenant = $1 AND document_id = $2"
        return await (conn or self.pool).fetchrow(q, tenant, document_id)

    async def visible_document(self, tenant: str, document_id: str) -> asyncpg.Record | None:
        """The caller's own document of that id, else the shared one; never another tenant's."""
        return await self.pool.fetchrow(
            f"SELECT * FROM {self.schema}.documents WHERE tenant = ANY($1) AND document_id = $2 "
            "ORDER BY tenant = $3 DESC LIMIT 1", visible_tenants(tenant), document_id, RESERVED_TENANT)

    async def has_chunks(self, index: IndexInfo, tenant: str, document_id: str, content_hash: str) -> bool:
        return bool(await self.pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {self.schema}.{index.table} "
            "WHERE tenant = $1 AND document_id = $2 AND content_hash = $3)", tenant, document_id, content_hash))

    async def documents_missing_from(self, index: IndexInfo) -> list[asyncpg.Record]:
        """Documents whose current content is not (yet) in `index`: what a new or interrupted build still needs."""
        return await self.pool.fetch(f"""
            SELECT * FROM {self.schema}.documents d WHERE content <> '' AND NOT EXISTS (
                SELECT 1 FROM {self.schema}.{index.table} c
                WHERE c.tenant = d.tenant AND c.document_id = d.document_id AND c.content_hash = d.content_hash)
            ORDER BY tenant, document_id""")

    async def write_document(self, index: IndexInfo, doc: dict, chunks: list[dict] | None,
                             embeddings: np.ndarray | None) -> str:
        """Stores `doc` and, when `chunks` is given, replaces its chunks in `index`; atomic, serialised per
        document. Returns created, updated, metadata, unchanged or stale (an older version than the stored one)."""
        s, t = self.schema, index.table
        tenant, document_id = doc["tenant"], doc["document_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _lock_key(tenant, document_id))
            old = await self.get_document(tenant, document_id, conn)
            if old is not None and old["updated_at"] > doc["updated_at"]:
                return "stale"
            if old is not None and old["content_hash"] != doc["content_hash"] and chunks is None:
                raise RuntimeError("content changed while it was being embedded; retry")
            same_meta = old is not None and all(old[k] == doc[k] for k in
                                                ("source_uri", "title", "sector", "doc_type")) \
                and json.loads(old["metadata"]) == doc["metadata"]
            await conn.execute(f"""
                INSERT INTO {s}.documents (document_id, source_uri, title, content, content_hash, tenant, sector,
                                           doc_type, metadata, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (tenant, document_id) DO UPDATE SET source_uri = $2, title = $3, content = $4,
                    content_hash = $5, sector = $7, doc_type = $8, metadata = $9, updated_at = $10,
                    ingested_at = CASE WHEN {s}.documents.content_hash = $5 THEN {s}.documents.ingested_at
                                       ELSE now() END""",
                document_id, doc["source_uri"], doc["title"], doc["content"], doc["content_hash"],
                tenant, doc["sector"], doc["doc_type"], json.dumps(doc["metadata"]), doc["updated_at"])
            if chunks is None:
                if not same_meta:  # same content, new metadata: chunks keep their vectors
                    await conn.execute(f"""
                        UPDATE {s}.{t} SET source_uri = $3, title = $4, sector = $5, doc_type = $6
                        WHERE tenant = $1 AND document_id = $2""", tenant, document_id, doc["source_uri"],
                        doc["title"], doc["sector"], doc["doc_type"])
                return "unchanged" if same_meta else "metadata"
            if embeddings is None:
                raise TypeError("chunks are written with their embeddings")
            removed = await self._supersede_chunks(conn, index, tenant, document_id, doc["content_hash"])
            ingested_at = await conn.fetchval(
                f"SELECT ingested_at FROM {s}.documents WHERE tenant = $1 AND document_id = $2", tenant, document_id)
            await conn.copy_records_to_table(
                t, schema_name=s, columns=[*CHUNK_COLUMNS.split(", "), "embedding"],
                records=[(c["chunk_id"], document_id, c["ordinal"], c["text"], c["start"], c["end"],
                          doc["title"], doc["source_uri"], tenant, doc["sector"], doc["doc_type"],
                          doc["content_hash"], ingested_at, e) for c, e in zip(chunks, embeddings, strict=True)])
            await conn.execute(f"""
                UPDATE {s}.indexes SET chunk_count = chunk_count + $2, doc_count = doc_count + $3,
                    updated_at = now() WHERE index_version = $1""",
                index.version, len(chunks) - removed, int(removed == 0 and len(chunks) > 0))
            return "created" if old is None else "updated"

    async def documents_under(self, tenant: str, source_uri_prefix: str) -> list[str]:
        """Ids of the tenant's documents whose source URI starts with the prefix (those loaded from one folder)."""
        rows = await self.pool.fetch(
            f"SELECT document_id FROM {self.schema}.documents WHERE tenant = $1 AND starts_with(source_uri, $2)",
            tenant, source_uri_prefix)
        return sorted(r["document_id"] for r in rows)

    async def delete_document(self, tenant: str, document_id: str) -> bool:
        """Removes the tenant's document and its chunks (vectors and lexemes live in the same rows; the triggers
        take them out of the BM25 statistics) from every index, old ones included: a deletion leaves no trace."""
        s = self.schema
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _lock_key(tenant, document_id))
            found = await conn.fetchval(
                f"DELETE FROM {s}.documents WHERE tenant = $1 AND document_id = $2 RETURNING true",
                tenant, document_id)
            await conn.execute(f"DELETE FROM {s}.superseded_chunks WHERE tenant = $1 AND document_id = $2",
                               tenant, document_id)
            for row in await conn.fetch(f"SELECT index_version, table_name FROM {s}.indexes"):
                removed = await self._delete_chunks(conn, row["table_name"], tenant, document_id)
                if removed:
                    await conn.execute(f"""
                        UPDATE {s}.indexes SET chunk_count = chunk_count - $2, doc_count = doc_count - 1,
                            updated_at = now() WHERE index_version = $1""", row["index_version"], removed)
            return bool(found)

    async def _supersede_chunks(self, conn: asyncpg.Connection, index: IndexInfo, tenant: str, document_id: str,
                                content_hash: str) -> int:
        """Takes the document's chunks out of the index, keeping those of other content than `content_hash` as
        superseded versions (an old citation keeps resolving); returns how many left the index."""
        s = self.schema
        # one statement: the chunks' texts move inside the database instead of through this process
        return int(await conn.fetchval(f"""
            WITH removed AS (
                DELETE FROM {s}.{index.table} WHERE tenant = $1 AND document_id = $2 RETURNING {CHUNK_COLUMNS}),
            kept AS (
                INSERT INTO {s}.superseded_chunks ({CHUNK_COLUMNS}, index_version)
                SELECT {CHUNK_COLUMNS}, $4 FROM removed WHERE content_hash <> $3 ON CONFLICT DO NOTHING)
            SELECT count(*) FROM removed""", tenant, document_id, content_hash, index.version))

    async def _delete_chunks(self, conn: asyncpg.Connection, table: str, tenant: str, document_id: str) -> int:
        status = await conn.execute(f"DELETE FROM {self.schema}.{table} WHERE tenant = $1 AND document_id = $2",
                                    tenant, document_id)
        return int(status.split()[-1])

    async def mark_built(self, index: IndexInfo, seconds: float) -> None:
        await self.pool.execute(f"""
            UPDATE {self.schema}.indexes SET built_at = now(), build_seconds = coalesce(build_seconds, 0) + $2
            WHERE index_version = $1""", index.version, seconds)

    async def indexes(self, tenant: str) -> list[dict]:
        """The index registry, with the document and chunk counts of `tenant` alone (the totals would tell one
        tenant how much the others hold)."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.schema}.indexes ORDER BY created_at")
        out = []
        for r in rows:
            counts = await self.pool.fetchrow(
                f"SELECT count(DISTINCT document_id) AS docs, count(*) AS chunks FROM {self.schema}.{r['table_name']} "
                "WHERE tenant = $1", tenant)
            out.append({**dict(r), "chunking": json.loads(r["chunking"]), "doc_count": counts["docs"],
                        "chunk_count": counts["chunks"]})
        return out

    # --- chunks ----------------------------------------------------------------------------------------

    async def chunk(self, index: IndexInfo, tenant: str, chunk_id: str) -> asyncpg.Record | None:
        """A chunk the caller may see, its own tenant's first, else a shared one: in the index (`superseded_at`
        null), or a version its document has since replaced."""
        return await self.pool.fetchrow(f"""
            SELECT * FROM (
                SELECT {CHUNK_COLUMNS}, NULL::timestamptz AS superseded_at FROM {self.schema}.{index.table}
                WHERE tenant = ANY($1) AND chunk_id = $2
                UNION ALL
                SELECT {CHUNK_COLUMNS}, superseded_at FROM {self.schema}.superseded_chunks
                WHERE tenant = ANY($1) AND chunk_id = $2) c
            ORDER BY superseded_at IS NOT NULL, tenant = $3 LIMIT 1""",
            visible_tenants(tenant), chunk_id, RESERVED_TENANT)

    async def chunks_of(self, index: IndexInfo, tenant: str, document_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"SELECT {CHUNK_COLUMNS} FROM {self.schema}.{index.table} WHERE tenant = $1 AND document_id = $2 "
            "ORDER BY ordinal", tenant, document_id)

    async def dense(self, index: IndexInfo, vector: np.ndarray, filters: Filters, n: int) -> list[asyncpg.Record]:
        where, args = filter_clause(filters, 3)
        return await self.pool.fetch(f"""
            SELECT {CHUNK_COLUMNS}, 1 - (embedding <=> $1) AS similarity FROM {self.schema}.{index.table}
            WHERE {where} ORDER BY embedding <=> $1 LIMIT $2""", vector, n, *args)


def chunk_id(document_id: str, content_hash: str, ordinal: int) -> str:
    """Stable for the same content, new for new content: a citation keeps pointing at what was cited. Unique within
    a tenant (chunk tables are keyed by tenant and chunk id)."""
    return f"{document_id}@{content_hash[:12]}-{ordinal}"


def _lock_key(tenant: str, document_id: str) -> str:
    return f"{tenant}/{document_id}"  # tenants are slugs: no "/" in them
