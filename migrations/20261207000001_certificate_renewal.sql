-- Certificates after issuance, part one: renewal. A certificate is due for renewal a window
-- before it expires; the renewal sweep (a Temporal Schedule) starts one renewal workflow per
-- certificate and due date, which reminds the developer, charges the renewal price and runs a
-- RENEWAL audit round over the same stored bytes as a new submission. Approval issues a new
-- certificate that renews (and supersedes) the old one; otherwise the old one expires.

alter table certificate drop constraint certificate_status_check;
alter table certificate add constraint certificate_status_check
    check (status in ('APPROVED', 'SUSPENDED', 'REVOKED', 'SUPERSEDED', 'EXPIRED'));

alter table certificate
    -- expires_at minus the renewal window, fixed at issuance: shown in verify and live-status.
    add column renewal_due_at timestamptz,
    -- The certificate this one renews (same subject digests, a later audit round).
    add column renews text references certificate,
    add column round_type text not null default 'INITIAL_AUDIT'
        check (round_type in ('INITIAL_AUDIT', 'RENEWAL'));

update certificate set renewal_due_at = expires_at - interval '30 days' where expires_at is not null;

-- What the renewal sweep pages through: live certificates by due date.
create index certificate_renewal_due on certificate (renewal_due_at, certificate_id)
    where status = 'APPROVED';

-- A renewal's submission names the certificate it renews.
alter table submission add column renewal_of text references certificate;

create table renewal (
    certificate_id text not null references certificate on delete cascade,
    due_at timestamptz not null,
    workflow_id text not null unique,
    -- SCHEDULED (reminded, waiting for the due date) → IN_PROGRESS (paid, audit running) →
    -- RENEWED | LAPSED (rejected, unpaid or failed; the old certificate expires on its date).
    -- UNPAID: the balance did not cover the price at the last attempt (retried until expiry).
    -- NOT_NEEDED: the certificate was superseded, suspended or revoked before the due date.
    status text not null default 'SCHEDULED'
        check (status in ('SCHEDULED', 'UNPAID', 'IN_PROGRESS', 'RENEWED', 'LAPSED', 'NOT_NEEDED')),
    price_credits bigint,
    submission_id text references submission,
    new_certificate_id text references certificate,
    reason text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (certificate_id, due_at)
);
create trigger renewal_updated_at before update on renewal for each row execute function set_updated_at();
create index renewal_status on renewal (status, due_at);

-- The renewal price is a catalog line: a RENEWAL rule scales the category's base price (basis
-- points) and adds a fixed amount; a category's own rule wins over the catalog-wide one.
alter table pricing_rule drop constraint pricing_rule_kind_check;
alter table pricing_rule add constraint pricing_rule_kind_check
    check (kind in ('COMPLEXITY_TIER', 'ENDPOINT', 'AUTHENTICATED_ENDPOINT', 'MUTATING_ENDPOINT', 'PACKAGE', 'RENEWAL'));
insert into pricing_rule (rule_id, kind, multiplier_bps, label) values
    ('00000000-0000-4000-8000-000000000010', 'RENEWAL', 5000, 'Renewal audit (half the category base price)');

alter table credit_ledger drop constraint credit_ledger_kind_check;
alter table credit_ledger add constraint credit_ledger_kind_check
    check (kind in ('TOPUP', 'VOUCHER', 'GRANT', 'DEBIT_SUBMISSION', 'DEBIT_RENEWAL', 'REFUND', 'ADJUSTMENT'));

-- Renewal progress is part of what `live-status` shows: announce it like a certificate change.
create function notify_renewal_change() returns trigger as $$
begin
    perform pg_notify('sigma_certificate', new.certificate_id);
    return null;
end;
$$ language plpgsql;
create trigger renewal_changed after insert or update of status on renewal
    for each row execute function notify_renewal_change();
