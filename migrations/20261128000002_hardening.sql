-- Intake compensation deletes a submission whose workflow could not start; its idempotency row goes with it.
alter table idempotency_key drop constraint idempotency_key_submission_id_fkey;
alter table idempotency_key add constraint idempotency_key_submission_id_fkey
    foreign key (submission_id) references submission on delete cascade;

-- Internal detail of a platform failure, for operators only; `reasons` keeps what developers see.
alter table submission add column failure_detail text;

-- Which Temporal attempt wrote a vote: a late, timed-out attempt must not overwrite a newer one.
alter table audit_vote add column activity_attempt integer not null default 0;

-- An email is claimed before it is sent, so two concurrent attempts cannot both send it.
alter table notification add column claimed_at timestamptz;
