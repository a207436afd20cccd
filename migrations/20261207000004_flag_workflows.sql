-- Flags, re-audits and operators' certificate status changes run as workflows. Each flag has
-- one `flag:{id}` workflow (recorded here once it runs, so the reconciler can start a missing
-- one); a REAUDIT runs the audit again as a submission of its own (`reaudit_of`) that issues no
-- certificate, and its outcome keeps, suspends or revokes the certificate.

alter table certificate_flag
    add column workflow_id text,
    -- Untriaged past `ops.flag_triage_deadline_secs`: listed as overdue for operators.
    add column overdue_at timestamptz,
    add column reaudit_submission_id text references submission;

alter table submission add column reaudit_of text references certificate;
