-- The tables of the first release (before numbered migrations): the projections keyed by event and alert id
-- alone, and the generated reports.
create schema if not exists {s};
create table if not exists {s}.events (
  event_id text primary key,
  tenant text not null,
  source text not null,
  type text not null,
  stream_id text not null,
  occurred_at timestamptz not null,
  metrics jsonb not null default '{}',
  attributes jsonb not null default '{}',
  enriched boolean not null default false,
  sentiment double precision,
  negative boolean,
  entities jsonb not null default '[]'
);
create index if not exists events_window on {s}.events (tenant, occurred_at);
create table if not exists {s}.anomalies (
  alert_id text primary key,
  dedup_key text not null,
  action text not null,
  tenant text not null,
  stream_id text not null,
  source text not null,
  metric text not null,
  value double precision not null,
  score double precision not null,
  threshold double precision not null,
  severity text not null,
  window_start timestamptz not null,
  window_end timestamptz not null,
  detector text not null,
  model_version text not null,
  event_id text not null,
  created_at timestamptz not null
);
create index if not exists anomalies_window on {s}.anomalies (tenant, window_end);
create table if not exists {s}.reports (
  report_id text primary key,
  tenant text not null,
  definition text not null,
  title text not null,
  period_start timestamptz not null,
  period_end timestamptz not null,
  generated_at timestamptz not null,
  content jsonb not null,
  pdf bytea not null,
  pdf_sha256 text not null
);
create index if not exists reports_tenant on {s}.reports (tenant, generated_at desc);
