-- Model-tier sync: what each validator provider's `GET /models` lists, with tier, family and
-- per-million-token prices (from the `ops.model_tiers` configuration or the provider's own
-- listing). A validator whose model vanished is paused by the sync, and resumed when it returns.

create table model_catalog (
    provider_url text not null,
    model_id text not null,
    family text,
    tier text not null default 'standard',
    price_in_per_mtok double precision check (price_in_per_mtok >= 0),
    price_out_per_mtok double precision check (price_out_per_mtok >= 0),
    -- Where the prices came from: `provider`, `config` or null (unknown).
    price_source text check (price_source in ('provider', 'config')),
    available boolean not null,
    first_seen_at timestamptz not null default now(),
    last_seen_at timestamptz,
    synced_at timestamptz not null default now(),
    primary key (provider_url, model_id)
);

-- The last answer of each provider, so a provider that fails shows as failing.
create table model_provider_sync (
    provider_url text primary key,
    ok boolean not null,
    models_listed integer not null default 0,
    error text,
    synced_at timestamptz not null default now()
);

alter table validator
    add column paused_by text,
    add column paused_reason text;
