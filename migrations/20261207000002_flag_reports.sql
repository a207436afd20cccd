-- A flag is a report, not a verdict. Anyone may file one, but only an escalation makes a
-- certificate stop verifying as valid: a re-audit an operator ordered (REAUDIT) or a flag the
-- monitor raised while it is unresolved. Untriaged public reports (OPEN, TRIAGED) are shown as
-- their own count. An UPHELD flag suspends the certificate when the operator upholds it.

alter table certificate_flag
    add column raised_by text not null default 'PUBLIC' check (raised_by in ('PUBLIC', 'MONITOR'));

-- Caps on open reports per reporter are counted here.
create index certificate_flag_open_by_reporter on certificate_flag (reporter_hash)
    where status in ('OPEN', 'TRIAGED');
