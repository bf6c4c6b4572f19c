-- the tables as the first release made them (without a version table): "if not exists" adopts them
create table if not exists {s}.models (
    version text primary key,
    stream_id text not null,
    metric text not null,
    created_at timestamptz not null default now(),
    train_start timestamptz not null,
    train_end timestamptz not null,
    reason text not null,
    hyperparameters jsonb not null,
    validation_error double precision not null,
    error_median double precision not null,
    error_mad double precision not null,
    center double precision not null,
    scale double precision not null,
    weights bytea not null
);
create index if not exists models_stream on {s}.models (stream_id, metric, created_at);
create table if not exists {s}.streams (
    stream_id text primary key,
    partition integer not null,
    last_offset bigint not null,
    detectors jsonb not null,
    updated_at timestamptz not null default now()
);
