-- The sandbox engine's summary: which engine and rule pack judged the bundle, what the code can
-- do, and the finding counts. Git submissions have no bundle until the sandbox fetches it.
alter table sandbox_report
    add column scanner_version text,
    add column rule_pack_version text,
    add column rule_pack_sha256 text,
    add column capabilities jsonb not null default '{}',
    add column counts jsonb not null default '{}';

alter table submission drop constraint submission_bundle_format_check;
alter table submission add constraint submission_bundle_format_check
    check (bundle_format in ('zip', 'tar.gz', 'tar', 'git'));

-- `owner/name` of a public git repository the sandbox fetches (pinned by `source_ref`).
alter table submission add column git_repository text;
