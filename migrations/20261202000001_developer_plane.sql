-- Developer plane: email login and portal sessions, operator console logins, drafts and their
-- checks, the pricing catalog, quotes, payment intents, the credit ledger and support.
-- Money is counted in credits: 1 USD = 100 credits, so one credit is one US cent.

alter table developer
    add column credit_balance bigint not null default 0 check (credit_balance >= 0),
    -- Set after repeated abusive input to the manifest assistant; support lifts it, and strikes
    -- before the lift no longer count.
    add column manifest_locked_at timestamptz,
    add column manifest_unlocked_at timestamptz;

-- One login attempt: a six-digit code and a magic-link token, both stored as keyed hashes.
-- `attempts` counts wrong codes only, so the per-address guess budget is their sum.
create table login_challenge (
    challenge_id uuid primary key,
    email text not null,
    code_hash bytea not null,
    link_hash bytea not null unique,
    client_ip text,
    attempts integer not null default 0,
    expires_at timestamptz not null,
    consumed_at timestamptz,
    created_at timestamptz not null default now()
);
create index login_challenge_email on login_challenge (email, created_at desc);

create table developer_session (
    session_id uuid primary key,
    token_hash bytea not null unique,
    developer_id uuid not null references developer on delete cascade,
    user_agent text,
    client_ip text,
    created_at timestamptz not null default now(),
    last_used_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz
);
create index developer_session_developer on developer_session (developer_id);

-- Console credentials are made by `sigma operator create-login`; the password is an Argon2id PHC string.
alter table operator add column password_hash text;

create table operator_session (
    session_id uuid primary key,
    token_hash bytea not null unique,
    operator_id uuid not null references operator on delete cascade,
    client_ip text,
    created_at timestamptz not null default now(),
    last_used_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz
);

create table draft (
    draft_id uuid primary key,
    developer_id uuid not null references developer on delete cascade,
    category text not null,
    -- Bumped by every change to what would be reviewed; checks, manifests and quotes name the revision they saw.
    revision integer not null default 1,
    source_type text not null default 'none' check (source_type in ('none', 'upload', 'github')),
    bundle_key text,
    bundle_sha256 text,
    bundle_bytes bigint,
    bundle_format text,
    git_repository text,
    git_ref text,
    entry text,
    advisory_note text,
    declared_endpoints jsonb not null default '[]',
    site_url text,
    manifest jsonb,
    manifest_revision integer,
    submission_id text unique references submission,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index draft_developer on draft (developer_id, created_at desc);
create trigger draft_updated_at before update on draft for each row execute function set_updated_at();

-- The deterministic dry-run of one draft revision (written by the `sandbox.check_draft` activity).
create table draft_check (
    draft_id uuid not null references draft on delete cascade,
    revision integer not null,
    passed boolean not null,
    failures jsonb not null,
    warnings jsonb not null,
    facts jsonb not null,
    report_key text,
    checked_at timestamptz not null default now(),
    primary key (draft_id, revision)
);

-- Every call to the manifest assistant, for the per-developer rate limit and abuse lock.
create table manifest_generation (
    generation_id uuid primary key,
    draft_id uuid not null references draft on delete cascade,
    developer_id uuid not null references developer on delete cascade,
    revision integer not null,
    -- INVALID: the model's answer failed the schema; REFUSED: unusable input (no SKILL.md, no front
    -- matter, too large); ABUSIVE: input aimed at the model (counts towards the lock).
    status text not null check (status in ('PENDING', 'ACCEPTED', 'INVALID', 'REFUSED', 'ABUSIVE', 'FAILED')),
    detail text,
    transcript_key text,
    created_at timestamptz not null default now(),
    finished_at timestamptz
);
create index manifest_generation_developer on manifest_generation (developer_id, created_at desc);

create table pricing_category (
    category text primary key,
    base_credits bigint not null check (base_credits >= 0),
    active boolean not null default true,
    shown_on_landing boolean not null default true,
    updated_at timestamptz not null default now()
);
create trigger pricing_category_updated_at before update on pricing_category for each row execute function set_updated_at();

-- A priced factor. `category` null applies to every category.
create table pricing_rule (
    rule_id uuid primary key,
    category text references pricing_category on delete cascade,
    kind text not null check (kind in ('COMPLEXITY_TIER', 'ENDPOINT', 'AUTHENTICATED_ENDPOINT', 'MUTATING_ENDPOINT', 'PACKAGE')),
    -- For COMPLEXITY_TIER: standard, complex or high-complex.
    tier text check (tier in ('standard', 'complex', 'high-complex')),
    -- Added per unit (endpoint, package) or once (tier).
    amount_credits bigint not null default 0 check (amount_credits >= 0),
    -- For COMPLEXITY_TIER: the base price is scaled by this many basis points (10000 = ×1).
    multiplier_bps integer check (multiplier_bps > 0),
    label text not null,
    active boolean not null default true,
    created_at timestamptz not null default now(),
    check ((kind = 'COMPLEXITY_TIER') = (tier is not null))
);

create table pricing_campaign (
    campaign_id uuid primary key,
    name text not null,
    category text references pricing_category on delete cascade,
    kind text not null check (kind in ('FIRST_N', 'WINDOW')),
    discount_bps integer not null check (discount_bps between 1 and 10000),
    limit_n integer check (limit_n > 0),
    used_n integer not null default 0 check (used_n >= 0),
    starts_at timestamptz,
    ends_at timestamptz,
    active boolean not null default true,
    created_at timestamptz not null default now(),
    -- The counter can never pass its limit, whatever the concurrency.
    check (limit_n is null or used_n <= limit_n),
    check ((kind = 'FIRST_N') = (limit_n is not null))
);

create table voucher (
    code text primary key,
    kind text not null check (kind in ('FREE_SUBMISSION', 'CREDITS')),
    credits bigint not null default 0 check (credits >= 0),
    uses_left integer not null check (uses_left >= 0),
    expires_at timestamptz,
    created_by uuid references operator,
    created_at timestamptz not null default now()
);

create table voucher_redemption (
    code text not null references voucher,
    developer_id uuid not null references developer on delete cascade,
    redeemed_at timestamptz not null default now(),
    primary key (code, developer_id)
);

-- Free audits: an exact address or a whole domain (`@example.org`).
create table free_allowlist (
    pattern text primary key,
    note text not null default '',
    created_by uuid references operator,
    created_at timestamptz not null default now()
);

-- One-shot free overrides an operator grants to one developer.
create table free_override (
    override_id uuid primary key,
    developer_id uuid not null references developer on delete cascade,
    reason text not null,
    created_by uuid references operator,
    used_at timestamptz,
    created_at timestamptz not null default now()
);

create table payment_method (
    method text primary key,
    enabled boolean not null,
    updated_at timestamptz not null default now()
);
-- Chain transfers and x402 come with the agent plane; until then they cannot be enabled.
insert into payment_method (method, enabled) values
    ('credits', true), ('voucher', true), ('free', true), ('direct_monad', false), ('x402', false), ('card', false);

create table quote (
    quote_id uuid primary key,
    draft_id uuid not null references draft on delete cascade,
    developer_id uuid not null references developer on delete cascade,
    revision integer not null,
    category text not null,
    complexity_tier text not null,
    line_items jsonb not null,
    total_credits bigint not null check (total_credits >= 0),
    campaign_id uuid references pricing_campaign,
    registry_savings_credits bigint not null default 0,
    price_snapshot jsonb not null,
    expires_at timestamptz not null,
    created_at timestamptz not null default now()
);
create index quote_draft on quote (draft_id, created_at desc);

create table payment_intent (
    intent_id uuid primary key,
    developer_id uuid not null references developer on delete cascade,
    draft_id uuid not null references draft on delete cascade,
    quote_id uuid not null references quote,
    method text not null references payment_method,
    amount_credits bigint not null check (amount_credits >= 0),
    status text not null check (status in ('CREATED', 'AWAITING_PAYMENT', 'CONFIRMING', 'CONFIRMED', 'FAILED', 'EXPIRED', 'CONSUMED', 'REFUNDED')),
    voucher_code text references voucher,
    override_id uuid references free_override,
    -- Filled by the chain and x402 methods.
    network text,
    receive_address text,
    tx_hash text unique,
    price_snapshot jsonb not null,
    submission_id text unique references submission,
    expires_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index payment_intent_developer on payment_intent (developer_id, created_at desc);
create trigger payment_intent_updated_at before update on payment_intent for each row execute function set_updated_at();

-- Append-only: the balance on `developer` moves only together with a row here.
create table credit_ledger (
    entry_id bigserial primary key,
    developer_id uuid not null references developer on delete cascade,
    kind text not null check (kind in ('TOPUP', 'VOUCHER', 'GRANT', 'DEBIT_SUBMISSION', 'REFUND', 'ADJUSTMENT')),
    amount_credits bigint not null check (amount_credits <> 0),
    balance_after bigint not null check (balance_after >= 0),
    -- What the entry is for (a submission id, a voucher code, an operator's idempotency key).
    reference text not null,
    note text,
    created_by uuid references operator,
    created_at timestamptz not null default now(),
    -- A retried debit, refund or grant can never be counted twice.
    unique (developer_id, kind, reference)
);
create index credit_ledger_developer on credit_ledger (developer_id, entry_id desc);

create function credit_ledger_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'credit_ledger is append-only';
end $$;
create trigger credit_ledger_no_update before update or delete on credit_ledger
    for each row execute function credit_ledger_append_only();

alter table submission
    add column draft_id uuid references draft,
    add column payment_intent_id uuid references payment_intent,
    add column charged_credits bigint not null default 0,
    add column price_snapshot jsonb,
    add column draft_snapshot jsonb;

create table support_ticket (
    ticket_id uuid primary key,
    developer_id uuid not null references developer on delete cascade,
    subject text not null,
    status text not null default 'OPEN' check (status in ('OPEN', 'PENDING', 'RESOLVED', 'CLOSED')),
    submission_id text references submission,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index support_ticket_developer on support_ticket (developer_id, created_at desc);
create trigger support_ticket_updated_at before update on support_ticket for each row execute function set_updated_at();

create table support_message (
    message_id uuid primary key,
    ticket_id uuid not null references support_ticket on delete cascade,
    author text not null check (author in ('DEVELOPER', 'OPERATOR')),
    operator_id uuid references operator,
    body text not null,
    emailed_at timestamptz,
    email_error text,
    created_at timestamptz not null default now()
);
create index support_message_ticket on support_message (ticket_id, created_at);

-- A starting catalog (tech landing: from $9); operators change it on the operator plane.
insert into pricing_category (category, base_credits) values
    ('SKILL', 900), ('API', 1200), ('SKILL_API', 1500), ('CODE', 1500), ('CODE_PACKAGES', 2000),
    ('SKILL_CODE', 2000), ('SKILL_CODE_PACKAGES', 2500), ('SKILL_API_CODE_PACKAGES', 3500);
insert into pricing_rule (rule_id, kind, tier, multiplier_bps, label) values
    ('00000000-0000-4000-8000-000000000001', 'COMPLEXITY_TIER', 'standard', 10000, 'Standard complexity'),
    ('00000000-0000-4000-8000-000000000002', 'COMPLEXITY_TIER', 'complex', 15000, 'Complex'),
    ('00000000-0000-4000-8000-000000000003', 'COMPLEXITY_TIER', 'high-complex', 20000, 'High complexity');
insert into pricing_rule (rule_id, kind, amount_credits, label) values
    ('00000000-0000-4000-8000-000000000004', 'ENDPOINT', 100, 'Declared endpoint'),
    ('00000000-0000-4000-8000-000000000005', 'AUTHENTICATED_ENDPOINT', 50, 'Authenticated endpoint'),
    ('00000000-0000-4000-8000-000000000006', 'MUTATING_ENDPOINT', 100, 'Mutating endpoint (POST/PUT/PATCH/DELETE)'),
    ('00000000-0000-4000-8000-000000000007', 'PACKAGE', 25, 'Dependency audit');
