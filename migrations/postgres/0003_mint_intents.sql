-- Mint intents: written before the broker asks GitHub for a caller's tokens, and deleted in the
-- same transaction as the mint's outcome (its token rows and audit event, or its failure event):
-- the audit log keeps the outcome, so a resolved intent has nothing left to say. A row still here
-- when no broker can be working on it any more means a crash between GitHub's answer and the
-- record: the broker reports it as `outcome_unknown` in the audit log (and deletes it).
-- No foreign keys: like the audit log, an intent outlives the workspace and session it names.
create table mint_intents (
    id             text   not null primary key,
    workspace_id   text   not null,
    session_id     text   not null,
    request_id     text,
    policy_name    text   not null,
    policy_version bigint,
    actor          text   not null,
    planned        text   not null,
    created_at     bigint not null
);
create index mint_intents_created_at on mint_intents (created_at);
