-- An email claim is owned: only the attempt holding the claim may release it or mark it sent.
alter table notification add column claim_token uuid;
