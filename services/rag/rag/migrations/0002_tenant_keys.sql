-- Documents and chunks keyed by (tenant, id): with the id alone, one tenant's upsert overwrote another tenant's
-- document and moved it to the writer's tenant. Existing rows keep their tenant (documents of "default" stay that
-- tenant's; shared reference documents are loaded explicitly with `python -m rag.folder DIR --shared`).
-- Reports that the reports service used to publish as documents (doc_type 'report', id 'report-...') are
-- removed: report text is no longer a grounding source.
ALTER TABLE {s}.documents DROP CONSTRAINT IF EXISTS documents_pkey;
ALTER TABLE {s}.documents ADD PRIMARY KEY (tenant, document_id);
DELETE FROM {s}.documents WHERE doc_type = 'report' AND starts_with(document_id, 'report-');
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT table_name FROM {s}.indexes LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', '{s}', t)) IS NULL;
        EXECUTE format('ALTER TABLE %I.%I DROP CONSTRAINT IF EXISTS %I', '{s}', t, t || '_pkey');
        EXECUTE format('ALTER TABLE %I.%I ADD PRIMARY KEY (tenant, chunk_id)', '{s}', t);
        EXECUTE format('DROP INDEX IF EXISTS %I.%I', '{s}', t || '_doc');
        EXECUTE format('DROP INDEX IF EXISTS %I.%I', '{s}', t || '_tenant');
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (tenant, document_id, content_hash)',
                       t || '_tdoc', '{s}', t);
        EXECUTE format('DELETE FROM %I.%I WHERE doc_type = %L AND starts_with(document_id, %L)',
                       '{s}', t, 'report', 'report-');
        EXECUTE format('UPDATE %I.indexes SET chunk_count = (SELECT count(*) FROM %I.%I), '
                       'doc_count = (SELECT count(*) FROM (SELECT DISTINCT tenant, document_id FROM %I.%I) d), '
                       'updated_at = now() WHERE table_name = %L', '{s}', '{s}', t, '{s}', t, t);
    END LOOP;
END $$;
