-- Chunks replaced by a new version of their document: no longer searched (no vector, no lexemes), but an old
-- citation still resolves to the text it cited. A deleted document takes its superseded chunks with it.
CREATE TABLE IF NOT EXISTS {s}.superseded_chunks (
    chunk_id      text NOT NULL,
    document_id   text NOT NULL,
    ordinal       int NOT NULL,
    text          text NOT NULL,
    char_start    int NOT NULL,
    char_end      int NOT NULL,
    title         text NOT NULL DEFAULT '',
    source_uri    text NOT NULL,
    tenant        text NOT NULL,
    sector        text,
    doc_type      text,
    content_hash  text NOT NULL,
    ingested_at   timestamptz NOT NULL,
    index_version text NOT NULL,
    superseded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, chunk_id));
CREATE INDEX IF NOT EXISTS superseded_chunks_doc ON {s}.superseded_chunks (tenant, document_id);
