-- Disputes: a developer may dispute a REJECTED outcome or a suspension of their certificate
-- within `ops.dispute_window_days`. One dispute per submission, ever; its `dispute:{id}` workflow
-- waits for an operator (UPHOLD or OVERTURN) until a deadline. Overturning runs a fresh audit
-- round: a new submission over the same bytes for a rejection (`dispute_of`), a re-audit of the
-- certificate for a suspension.

create table dispute (
    dispute_id uuid primary key,
    submission_id text not null references submission,
    developer_id uuid not null references developer on delete cascade,
    kind text not null check (kind in ('REJECTION', 'SUSPENSION')),
    certificate_id text references certificate,
    reason text not null check (length(reason) between 1 and 4000),
    status text not null default 'OPEN' check (status in ('OPEN', 'UPHELD', 'OVERTURNED')),
    decision_note text,
    decided_by text,
    -- The fresh round an overturn ran, and how it ended.
    fresh_submission_id text references submission,
    final_outcome text,
    workflow_id text not null,
    created_at timestamptz not null default now(),
    decided_at timestamptz,
    concluded_at timestamptz
);
create unique index dispute_one_per_submission on dispute (submission_id);
create index dispute_open on dispute (created_at) where status = 'OPEN';

alter table submission add column dispute_of text references submission;
