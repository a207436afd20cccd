-- Live endpoint probes, monitors (endpoints, source drift, verified site) and site verification.

-- The sandbox stage's probe of the declared endpoints; the full report stays in blob storage.
alter table sandbox_report
    add column endpoint_status text not null default 'NOT_APPLICABLE'
        check (endpoint_status in ('PASSED', 'FAILED', 'SKIPPED', 'NOT_APPLICABLE')),
    add column api_probe jsonb;

-- One monitor per monitored certificate: what it checks, how often, how many checks are left,
-- and the facts at issuance that later checks are compared with.
create table monitor (
    certificate_id text primary key references certificate on delete cascade,
    status text not null default 'ACTIVE' check (status in ('ACTIVE', 'PAUSED', 'COMPLETED')),
    checks text[] not null check (checks <@ array['ENDPOINTS', 'SOURCE', 'SITE']::text[] and cardinality(checks) > 0),
    checks_remaining integer not null check (checks_remaining >= 0),
    interval_secs bigint not null check (interval_secs > 0),
    check_count integer not null default 0 check (check_count >= 0),
    next_check_at timestamptz not null,
    last_check_at timestamptz,
    last_result text check (last_result in ('OK', 'ANOMALY')),
    last_findings jsonb not null default '[]',
    baseline jsonb not null,
    drift_state text not null default 'NOT_APPLICABLE'
        check (drift_state in ('NOT_APPLICABLE', 'UNCHECKED', 'UNCHANGED', 'DRIFTED')),
    drift_detail text,
    drift_checked_at timestamptz,
    created_at timestamptz not null default now()
);
create index monitor_due on monitor (next_check_at, certificate_id) where status = 'ACTIVE';

-- Each check once: a retried or repeated check finds its row and changes nothing.
create table monitor_check (
    certificate_id text not null references monitor on delete cascade,
    check_no integer not null check (check_no > 0),
    -- SKIPPED: the certificate was not valid when the check came; the number is used up.
    result text not null check (result in ('OK', 'ANOMALY', 'SKIPPED')),
    findings jsonb not null,
    probe jsonb,
    checked_at timestamptz not null default now(),
    primary key (certificate_id, check_no)
);

create trigger monitor_changed
    after insert or delete or update on monitor
    for each row execute function notify_certificate_change();

-- A developer's proof of control over a site: a token served at
-- `/.well-known/sigma-verification.txt` or in a `<meta name="sigma-verification">` tag.
create table site_verification (
    site_id uuid primary key,
    developer_id uuid not null references developer on delete cascade,
    url text not null check (length(url) <= 2000),
    token text not null unique,
    status text not null default 'PENDING' check (status in ('PENDING', 'CHECKING', 'VERIFIED', 'FAILED', 'LOST')),
    method text check (method in ('FILE', 'META')),
    last_error text,
    requests integer not null default 0,
    checked_at timestamptz,
    verified_at timestamptz,
    created_at timestamptz not null default now(),
    unique (developer_id, url)
);

-- A certificate shows its developer's proof for the site its draft named; a change to the proof
-- is announced for each such certificate so `verify` and `live-status` show it at once.
create function notify_site_change() returns trigger as $$
begin
    perform pg_notify('sigma_certificate', c.certificate_id)
    from certificate c join submission s on s.submission_id = c.certificate_id
    where s.developer_id = new.developer_id and s.draft_snapshot ->> 'siteUrl' = new.url;
    return null;
end;
$$ language plpgsql;

create trigger site_verification_changed
    after insert or update on site_verification
    for each row execute function notify_site_change();
