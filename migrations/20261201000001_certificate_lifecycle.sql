-- Certificates after issuance: the signed envelope, lifecycle state kept apart from the sealed
-- snapshot, public flags, and change notifications that keep every API replica's cache fresh.

alter table certificate
    -- DSSE envelope over the in-toto statement (see shared/src/attestation.rs).
    add column envelope jsonb,
    add column signing_key_id text,
    add column developer_id uuid references developer,
    add column expires_at timestamptz,
    add column status_reason text,
    add column status_changed_at timestamptz,
    add column status_changed_by text,
    add column superseded_by text references certificate,
    -- What `q` searches: the skill's name and description, lower-cased.
    add column search_text text generated always as (
        lower(coalesce(sealed ->> 'skillName', '') || ' ' || coalesce(sealed #>> '{manifest,description}', ''))
    ) stored;

alter table certificate add constraint certificate_status_check
    check (status in ('APPROVED', 'SUSPENDED', 'REVOKED', 'SUPERSEDED'));

create index certificate_listing on certificate (issued_at desc, certificate_id desc);
create index certificate_skill on certificate (developer_id, (sealed ->> 'skillName'));

-- Anyone may flag a certificate. Unresolved flags (OPEN, TRIAGED, REAUDIT) make it not valid.
create table certificate_flag (
    flag_id uuid primary key,
    certificate_id text not null references certificate on delete cascade,
    reason text not null check (length(reason) between 1 and 2000),
    evidence text check (length(evidence) <= 10000),
    contact text check (length(contact) <= 320),
    -- SHA-256 of the client address: enough to rate-limit and deduplicate, not to identify.
    reporter_hash text not null,
    status text not null default 'OPEN' check (status in ('OPEN', 'TRIAGED', 'REAUDIT', 'UPHELD', 'DISMISSED')),
    resolution_note text,
    resolved_by text,
    created_at timestamptz not null default now(),
    resolved_at timestamptz
);
-- One unresolved flag per reporter and reason: a repeated POST returns the flag it already made.
create unique index certificate_flag_once on certificate_flag (certificate_id, reporter_hash, md5(reason))
    where status in ('OPEN', 'TRIAGED', 'REAUDIT');
create index certificate_flag_unresolved on certificate_flag (certificate_id)
    where status in ('OPEN', 'TRIAGED', 'REAUDIT');

-- Every change a public reader must see at once is announced on `sigma_certificate` with the
-- certificate id. View counts are not announced: they are flushed in batches and would only churn
-- the caches.
create function notify_certificate_change() returns trigger as $$
begin
    if tg_op = 'DELETE' then
        perform pg_notify('sigma_certificate', old.certificate_id);
    else
        perform pg_notify('sigma_certificate', new.certificate_id);
    end if;
    return null;
end;
$$ language plpgsql;

create trigger certificate_changed
    after insert or delete or update of status, envelope, expires_at, superseded_by, status_reason, sealed
    on certificate for each row execute function notify_certificate_change();

create trigger certificate_flag_changed
    after insert or delete or update of status on certificate_flag
    for each row execute function notify_certificate_change();

-- For the landing page's "findings above medium" counter.
alter table sandbox_report add column findings_above_medium integer not null default 0;
