-- models and detector state are keyed by (tenant, stream id): two tenants may name a stream alike. Rows made
-- before belong to the default tenant (the one events without a tenant carry), so no state or model is lost.
alter table {s}.models add column tenant text not null default 'default';
alter table {s}.streams add column tenant text not null default 'default';
alter table {s}.streams drop constraint streams_pkey;
alter table {s}.streams add primary key (tenant, stream_id);
drop index {s}.models_stream;
create index models_tenant_stream on {s}.models (tenant, stream_id, metric, created_at);
