-- Report runs: each (definition, period, version) is claimed once, then moves through generated -> published ->
-- done, with one delivery row per channel; a restarted service resumes every run that is not done.
-- Projection rows remember when they were first projected (and enriched), so that a report's figures and its
-- drill-down read the rows as of the same moment.
ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS projected_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS enriched_at timestamptz;
UPDATE {s}.events SET enriched_at = projected_at WHERE enriched AND enriched_at IS NULL;
ALTER TABLE {s}.anomalies ADD COLUMN IF NOT EXISTS projected_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE {s}.reports ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
CREATE TABLE IF NOT EXISTS {s}.runs (
    report_id        text PRIMARY KEY,
    tenant           text NOT NULL,
    definition       text NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    version          integer NOT NULL,
    reason           text NOT NULL CHECK (reason IN ('scheduled', 'backfill', 'late', 'manual')),
    state            text NOT NULL DEFAULT 'claimed' CHECK (state IN ('claimed', 'generated', 'published', 'done')),
    definition_sha256 text NOT NULL,
    figures_sha256   text,
    lease_owner      text,
    lease_until      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    error            text,
    publish_started_at timestamptz,
    published_partition integer,
    published_offset bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, definition, period_start, period_end, version));
CREATE INDEX IF NOT EXISTS runs_open ON {s}.runs (next_attempt_at) WHERE state <> 'done';
CREATE TABLE IF NOT EXISTS {s}.deliveries (
    report_id        text NOT NULL REFERENCES {s}.runs (report_id),
    channel          text NOT NULL CHECK (channel IN ('email', 'slack', 'portal')),
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    error            text,
    delivered_at     timestamptz,
    PRIMARY KEY (report_id, channel));
-- When each definition was first scheduled here: periods that ended before are not back-filled (a new definition
-- or a new deployment does not make the last days' reports at once; an outage's missed periods are).
CREATE TABLE IF NOT EXISTS {s}.schedules (
    tenant      text NOT NULL,
    definition  text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, definition));
