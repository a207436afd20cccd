-- The durable submission pipeline: accounts with bearer tokens, submissions and their projection,
-- sandbox reports, validators, audit rounds and votes, operator decisions, certificates, emails.

create or replace function set_updated_at() returns trigger as $$
begin
    new.updated_at = now();
    return new;
end;
$$ language plpgsql;

create table developer (
    developer_id uuid primary key,
    email text not null unique,
    display_name text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger developer_updated_at before update on developer for each row execute function set_updated_at();

-- API tokens are stored as SHA-256 of the secret; the secret itself is shown once, at creation.
create table developer_token (
    token_hash bytea primary key,
    developer_id uuid not null references developer on delete cascade,
    label text not null default '',
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);

create table operator (
    operator_id uuid primary key,
    name text not null unique,
    created_at timestamptz not null default now()
);

create table operator_token (
    token_hash bytea primary key,
    operator_id uuid not null references operator on delete cascade,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);

create table submission (
    submission_id text primary key check (submission_id ~ '^[0-9a-f]{24}$'),
    developer_id uuid not null references developer,
    category text not null,
    skill_name text,
    skill_version text,
    source_url text,
    source_ref text,
    note text,
    bundle_key text not null,
    bundle_sha256 text not null,
    bundle_bytes bigint not null,
    bundle_format text not null check (bundle_format in ('zip', 'tar.gz')),
    workflow_id text not null unique,
    stage text not null default 'RECEIVED',
    consensus text,
    outcome text,
    reasons jsonb not null default '[]',
    risk_level text,
    round_id text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    sandbox_started_at timestamptz,
    audit_started_at timestamptz,
    decided_at timestamptz,
    completed_at timestamptz
);
create trigger submission_updated_at before update on submission for each row execute function set_updated_at();
create index submission_developer_created on submission (developer_id, created_at desc, submission_id desc);

create table idempotency_key (
    developer_id uuid not null references developer on delete cascade,
    idempotency_key text not null,
    request_sha256 text not null,
    submission_id text not null references submission,
    created_at timestamptz not null default now(),
    primary key (developer_id, idempotency_key)
);

create table sandbox_report (
    submission_id text primary key references submission on delete cascade,
    report_key text not null,
    blocked boolean not null,
    risk_level text not null,
    skill_md_sha256 text,
    bundle_digest text not null,
    file_count integer not null,
    total_bytes bigint not null,
    manifest jsonb,
    signals jsonb not null,
    finding_count integer not null,
    analyzed_at timestamptz not null default now()
);

-- A validator: one LLM model at one OpenAI-compatible provider.
create table validator (
    validator_id text primary key,
    display_name text not null,
    model text not null,
    provider_url text not null,
    -- Name of the environment variable holding the provider key; the key never enters the database.
    api_key_env text,
    -- `json_object_schema` (llama.cpp style) or `json_schema` (OpenAI style) structured output.
    response_format text not null default 'json_schema' check (response_format in ('json_schema', 'json_object_schema')),
    weight double precision not null default 1.0 check (weight > 0),
    active boolean not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger validator_updated_at before update on validator for each row execute function set_updated_at();

create table audit_round (
    round_id text primary key,
    submission_id text not null references submission on delete cascade,
    ordinal integer not null,
    round_type text not null default 'INITIAL_AUDIT',
    panel jsonb not null default '{}',
    consensus text,
    policy_version text,
    started_at timestamptz not null default now(),
    completed_at timestamptz,
    unique (submission_id, ordinal)
);

create table audit_vote (
    round_id text not null references audit_round on delete cascade,
    phase smallint not null check (phase in (1, 2)),
    validator_id text not null references validator,
    model text not null,
    status text not null check (status in ('CAST', 'FAILED')),
    verdict text check (verdict in ('SAFE', 'UNSAFE')),
    severity text,
    blocking boolean,
    findings jsonb not null default '[]',
    rationale text,
    failure text,
    transcript_key text,
    attempts integer not null default 0,
    created_at timestamptz not null default now(),
    primary key (round_id, phase, validator_id),
    check ((status = 'CAST') = (verdict is not null))
);

create table operator_decision (
    submission_id text primary key references submission on delete cascade,
    operator_id uuid references operator,
    decided_by text not null,
    decision text not null check (decision in ('APPROVED', 'REJECTED')),
    reason text not null,
    decided_at timestamptz not null default now()
);

-- One certificate per submission, ever: the primary key is the submission id.
create table certificate (
    certificate_id text primary key references submission,
    status text not null,
    sealed jsonb not null,
    payload_hash text not null,
    hash_algorithm text not null,
    skill_md_sha256 text,
    bundle_digest text not null,
    snapshot_key text not null,
    issued_at timestamptz not null default now(),
    view_count bigint not null default 0
);

create table notification (
    submission_id text not null references submission on delete cascade,
    kind text not null,
    recipient text not null,
    subject text not null,
    sent_at timestamptz,
    attempts integer not null default 0,
    last_error text,
    primary key (submission_id, kind)
);
