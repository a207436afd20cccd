-- An operator retry is the intake step of a new run: the run claims the failed submission and
-- records its own id here, so a repeated attempt of that step recognises its own claim.
alter table submission add column intake_run_id text;
