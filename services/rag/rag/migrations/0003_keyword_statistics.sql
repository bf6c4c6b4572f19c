-- BM25 statistics kept beside every chunk table, in the same transaction as the chunk writes (rag/keyword.py
-- reads them). Per tenant, so that a caller's statistics are summed over the tenants it may see and never hold
-- another tenant's counts:
--   keyword_corpus:   chunks and tokens of a tenant in an index (N and avgdl);
--   keyword_terms:    document frequency of each lexeme;
--   keyword_postings: one row per (chunk, lexeme) with its term frequency and the chunk's length, ordered by
--                     impact (tf, then shorter chunks first) so a query reads a bounded prefix of a common term.
-- Triggers on each chunk table keep them up to date on insert (COPY included), update, delete and truncate.
-- Tokens are the lexemes of the chunk's `tsv` (title and text, english configuration) with their positions.
CREATE TABLE {s}.keyword_corpus (
    index_table text NOT NULL,
    tenant      text NOT NULL,
    chunks      bigint NOT NULL,
    tokens      bigint NOT NULL,
    PRIMARY KEY (index_table, tenant));
CREATE TABLE {s}.keyword_terms (
    index_table text NOT NULL,
    tenant      text NOT NULL,
    term        text NOT NULL,
    df          int NOT NULL,
    -- never raised on delete: a lower bound of the lengths of the chunks holding the term (bounds unread postings)
    min_dl      int NOT NULL,
    PRIMARY KEY (index_table, tenant, term));
CREATE TABLE {s}.keyword_postings (
    index_table text NOT NULL,
    tenant      text NOT NULL,
    term        text NOT NULL,
    tf          int NOT NULL,
    dl          int NOT NULL,
    chunk_id    text NOT NULL);
CREATE UNIQUE INDEX keyword_postings_impact ON {s}.keyword_postings
    (index_table, tenant, term, tf DESC, dl, chunk_id);

-- adds (sign 1) or removes (sign -1) the statistics of the chunks staged in `keyword_tokens` to chunk table `target`'s
CREATE FUNCTION {s}.keyword_count(target text, sign int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- writers of one tenant take its term rows in turn: two documents written at once could otherwise lock
    -- common terms in opposite orders and deadlock
    PERFORM pg_advisory_xact_lock(hashtext('keyword:' || target || '/' || tenant))
        FROM (SELECT DISTINCT tenant FROM keyword_tokens ORDER BY tenant) t;
    IF sign > 0 THEN
        INSERT INTO {s}.keyword_postings
            SELECT target, tenant, term, tf, dl, chunk_id FROM keyword_tokens WHERE term IS NOT NULL;
    ELSE
        DELETE FROM {s}.keyword_postings p USING keyword_tokens k
        WHERE p.index_table = target AND p.tenant = k.tenant AND p.term = k.term
          AND p.tf = k.tf AND p.dl = k.dl AND p.chunk_id = k.chunk_id;
    END IF;
    INSERT INTO {s}.keyword_terms AS t
        SELECT target, tenant, term, sign * count(*), min(dl) FROM keyword_tokens WHERE term IS NOT NULL
        GROUP BY tenant, term
    ON CONFLICT (index_table, tenant, term) DO UPDATE
        SET df = t.df + excluded.df, min_dl = least(t.min_dl, excluded.min_dl);
    INSERT INTO {s}.keyword_corpus AS c
        SELECT target, tenant, sign * count(*), sign * sum(dl)
        FROM (SELECT DISTINCT tenant, chunk_id, dl FROM keyword_tokens) d GROUP BY tenant
    ON CONFLICT (index_table, tenant) DO UPDATE SET chunks = c.chunks + excluded.chunks,
                                                    tokens = c.tokens + excluded.tokens;
    TRUNCATE keyword_tokens;
END $$;

-- The statement staging the tokens of the chunks in relation `source` into `keyword_tokens` (made here, once per
-- session). A transition table is visible only to its trigger function's own statements, so the trigger runs the
-- statement itself. A chunk without lexemes is staged with a NULL term: it still counts in N.
CREATE FUNCTION {s}.keyword_staging(source text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS keyword_tokens (tenant text, chunk_id text, term text, tf int, dl int)
        ON COMMIT DELETE ROWS;
    RETURN 'INSERT INTO keyword_tokens
            SELECT c.tenant, c.chunk_id, l.lexeme, cardinality(l.positions),
                   coalesce(sum(cardinality(l.positions)) OVER (PARTITION BY c.tenant, c.chunk_id), 0)
            FROM ' || source || ' c LEFT JOIN LATERAL unnest(c.tsv) l ON true';
END $$;

CREATE FUNCTION {s}.keyword_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {s}.keyword_postings WHERE index_table = TG_TABLE_NAME;
        DELETE FROM {s}.keyword_terms WHERE index_table = TG_TABLE_NAME;
        DELETE FROM {s}.keyword_corpus WHERE index_table = TG_TABLE_NAME;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        EXECUTE {s}.keyword_staging('old_chunks');
        PERFORM {s}.keyword_count(TG_TABLE_NAME, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        EXECUTE {s}.keyword_staging('new_chunks');
        PERFORM {s}.keyword_count(TG_TABLE_NAME, 1);
    END IF;
    RETURN NULL;
END $$;

-- Attaches the triggers to chunk table `t` and counts the rows it already holds; does nothing if attached.
CREATE FUNCTION {s}.keyword_attach(t text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = format('%I.%I', '{s}', t)::regclass
                                          AND tgname = 'keyword_insert') THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TRIGGER keyword_insert AFTER INSERT ON %I.%I REFERENCING NEW TABLE AS new_chunks '
                   'FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyword_track()', '{s}', t);
    EXECUTE format('CREATE TRIGGER keyword_update AFTER UPDATE ON %I.%I '
                   'REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks '
                   'FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyword_track()', '{s}', t);
    EXECUTE format('CREATE TRIGGER keyword_delete AFTER DELETE ON %I.%I REFERENCING OLD TABLE AS old_chunks '
                   'FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyword_track()', '{s}', t);
    EXECUTE format('CREATE TRIGGER keyword_truncate AFTER TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyword_track()', '{s}', t);
    EXECUTE {s}.keyword_staging(format('%I.%I', '{s}', t));
    PERFORM {s}.keyword_count(t, 1);
END $$;

SELECT {s}.keyword_attach(table_name) FROM {s}.indexes
WHERE to_regclass(format('%I.%I', '{s}', table_name)) IS NOT NULL;
