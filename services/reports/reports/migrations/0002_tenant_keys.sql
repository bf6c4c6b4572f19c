-- The projections keyed by (tenant, id): with the id alone, an event or alert of one tenant carrying the id of
-- another tenant's row overwrote it (and moved it to the writer's tenant).
ALTER TABLE {s}.events DROP CONSTRAINT IF EXISTS events_pkey;
ALTER TABLE {s}.events ADD PRIMARY KEY (tenant, event_id);
ALTER TABLE {s}.anomalies DROP CONSTRAINT IF EXISTS anomalies_pkey;
ALTER TABLE {s}.anomalies ADD PRIMARY KEY (tenant, alert_id);
