-- Tenancy: an alert's deduplication key is unique within its tenant only, and a silence belongs to the tenant
-- whose API key made it. Silences made before keys existed have no tenant and mute nothing.
alter table {s}.deliveries add column if not exists tenant text not null default '';
update {s}.deliveries set tenant = coalesce(alert->>'tenant', '') where tenant = '';
alter table {s}.deliveries alter column tenant drop default;
alter table {s}.deliveries drop constraint if exists deliveries_dedup_key_action_receiver_key;
create unique index if not exists deliveries_tenant_dedup on {s}.deliveries (tenant, dedup_key, action, receiver);
alter table {s}.attempts add column if not exists tenant text;
alter table {s}.silences add column if not exists tenant text;
create index if not exists silences_tenant on {s}.silences (tenant, ends_at);
