-- notify's tables as the first releases created them (idempotent: those databases already have them)
create schema if not exists {s};
create table if not exists {s}.deliveries (
  id bigserial primary key,
  alert_id text not null,
  dedup_key text not null,
  action text not null,
  receiver text not null,
  channel text not null,
  stream_id text not null,
  group_key text not null,
  group_wait double precision not null,
  group_interval double precision not null,
  source_topic text not null,
  alert jsonb not null,
  status text not null default 'pending',  -- pending, delivered, dead_lettered, silenced
  attempts int not null default 0,
  silence_id uuid,
  last_error text,
  received_at timestamptz not null default clock_timestamp(),
  finished_at timestamptz,
  unique (dedup_key, action, receiver)
);
create index if not exists deliveries_pending on {s}.deliveries (receiver, group_key) where status = 'pending';
create table if not exists {s}.groups (
  receiver text not null,
  group_key text not null,
  last_sent_at timestamptz not null,
  primary key (receiver, group_key)
);
create table if not exists {s}.attempts (
  notification_id uuid primary key,
  delivery_id bigint references {s}.deliveries (id),
  alert_id text not null,
  dedup_key text not null,
  action text not null,
  receiver text not null,
  channel text not null,
  stream_id text not null,
  outcome text not null,
  attempt int not null,
  status_code int,
  error text,
  silence_id uuid,
  at timestamptz not null default clock_timestamp(),
  published boolean not null default false
);
create index if not exists attempts_unpublished on {s}.attempts (at) where not published;
create table if not exists {s}.silences (
  id uuid primary key,
  matchers jsonb not null,
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  created_by text not null,
  comment text not null,
  updated_at timestamptz not null default clock_timestamp()
);
