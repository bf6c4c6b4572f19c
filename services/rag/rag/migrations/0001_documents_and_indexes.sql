-- The tables of the first release (before numbered migrations): documents keyed by their id alone, and the
-- index registry. Chunk tables are made per index by Store.open_index.
CREATE TABLE IF NOT EXISTS {s}.documents (
    document_id  text PRIMARY KEY,
    source_uri   text NOT NULL,
    title        text NOT NULL DEFAULT '',
    content      text NOT NULL,
    content_hash text NOT NULL,
    tenant       text NOT NULL,
    sector       text,
    doc_type     text,
    metadata     jsonb NOT NULL DEFAULT '{}',
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
    updated_at       timestamptz NOT NULL DEFAULT now());
