-- The candidates a round's panels were drawn from, with the effective weights and families used,
-- and whether a validator's provider honours a sampling seed (OpenAI-compatible servers that
-- reject unknown fields get none).
alter table audit_round add column candidates jsonb not null default '[]';
alter table validator add column sends_seed boolean not null default true;

-- View counts apart from the certificate row: a batched flush then touches small rows only, not
-- the sealed snapshot (and its generated search text) of every certificate viewed.
create table certificate_view (
    certificate_id text primary key references certificate on delete cascade,
    views bigint not null default 0
);
insert into certificate_view (certificate_id, views)
    select certificate_id, view_count from certificate where view_count > 0;
alter table certificate drop column view_count;
