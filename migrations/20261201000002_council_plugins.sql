-- Validator-owned review plugins (Markdown guidance, at most 10,000 characters) in slots 1-6, the
-- record of every injection into a vote, and the LLM usage ledger.

create table validator_plugin (
    plugin_id uuid primary key,
    owner_validator_id text not null references validator,
    plugin_type text not null check (plugin_type in ('SIGMA_SKILL', 'SIGMA_API', 'SIGMA_SKILL_AND_API')),
    name text not null check (length(name) between 1 and 120),
    body text not null check (length(body) between 1 and 10000),
    version integer not null default 1 check (version >= 1),
    status text not null default 'PENDING_REVIEW'
        check (status in ('PENDING_REVIEW', 'APPROVED', 'REJECTED', 'SUSPENDED')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger validator_plugin_updated_at before update on validator_plugin
    for each row execute function set_updated_at();

-- SIGMA uses slots 1-6 of a validator's plugin grid; a plugin sits in at most one of them.
create table plugin_slot (
    validator_id text not null references validator on delete cascade,
    slot smallint not null check (slot between 1 and 6),
    plugin_id uuid not null references validator_plugin on delete cascade,
    assigned_at timestamptz not null default now(),
    primary key (validator_id, slot),
    unique (validator_id, plugin_id)
);

alter table validator add column sigma_eligible boolean not null default true;

-- One row per plugin injected into one vote; a SIGMA_SKILL_AND_API plugin counts once.
create table plugin_usage (
    plugin_id uuid not null references validator_plugin on delete cascade,
    plugin_version integer not null,
    validator_id text not null references validator,
    submission_id text not null references submission on delete cascade,
    round_id text not null references audit_round on delete cascade,
    phase smallint not null check (phase in (1, 2)),
    plugin_type text not null,
    product_type text not null,
    verdict text,
    created_at timestamptz not null default now(),
    primary key (plugin_id, round_id, phase, validator_id)
);

-- Every LLM call: what it cost, in tokens and dollars.
create table llm_usage (
    llm_usage_id bigserial primary key,
    purpose text not null,
    submission_id text references submission on delete cascade,
    round_id text,
    phase smallint,
    validator_id text,
    model text not null,
    provider_url text not null,
    prompt_tokens integer,
    completion_tokens integer,
    cost_usd double precision,
    latency_ms integer not null,
    outcome text not null,
    created_at timestamptz not null default now()
);
create index llm_usage_submission on llm_usage (submission_id);

-- Prices of a validator's model, per million tokens, for the usage ledger's cost column.
alter table validator
    add column price_in_per_mtok double precision not null default 0 check (price_in_per_mtok >= 0),
    add column price_out_per_mtok double precision not null default 0 check (price_out_per_mtok >= 0);

-- Plugin changes reach every worker's plugin cache (see activities/src/audit/plugins.rs).
create function notify_plugin_change() returns trigger as $$
declare
    row_plugin uuid;
begin
    if tg_table_name = 'plugin_slot' then
        if tg_op = 'DELETE' then
            perform pg_notify('sigma_plugin', old.validator_id);
        else
            perform pg_notify('sigma_plugin', new.validator_id);
        end if;
        return null;
    end if;
    -- A plugin's text or status matters to every validator that slots it.
    if tg_op = 'DELETE' then
        row_plugin := old.plugin_id;
    else
        row_plugin := new.plugin_id;
    end if;
    perform pg_notify('sigma_plugin', s.validator_id) from plugin_slot s where s.plugin_id = row_plugin;
    return null;
end;
$$ language plpgsql;

create trigger plugin_slot_changed after insert or update or delete on plugin_slot
    for each row execute function notify_plugin_change();
create trigger validator_plugin_changed after update or delete on validator_plugin
    for each row execute function notify_plugin_change();

-- Validators as the council sees them: who owns them, which model family they run, and the
-- standing their effective weight is computed from (shared/src/council.rs).
alter table validator
    add column owner text,
    add column model_family text,
    add column stake double precision not null default 0 check (stake >= 0),
    add column reputation double precision not null default 0.5 check (reputation between 0 and 1),
    add column audit_accuracy double precision not null default 0.5 check (audit_accuracy between 0 and 1),
    add column status text not null default 'ACTIVE' check (status in ('ACTIVE', 'PAUSED', 'SUSPENDED', 'RETIRED'));

-- After each outcome (consensus or operator), whether each cast vote agreed with it.
create table validator_agreement (
    round_id text not null references audit_round on delete cascade,
    phase smallint not null,
    validator_id text not null references validator,
    verdict text not null,
    outcome text not null,
    agreed boolean not null,
    recorded_at timestamptz not null default now(),
    primary key (round_id, phase, validator_id)
);

-- What each vote was asked and answered, as content-addressed blobs, and the prompt's hash.
alter table audit_vote
    add column prompt_sha256 text,
    add column prompt_key text,
    add column response_key text,
    add column verdict_key text,
    add column replaces text;

-- The round's reproducibility record: models, providers, parameters, prompt hashes, plugins,
-- policy and rule pack.
alter table audit_round add column manifest jsonb, add column manifest_key text;
