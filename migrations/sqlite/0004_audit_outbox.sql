-- Audit export outbox: every audit event, as it is appended, also gets a row here in the same
-- transaction, and the export task (src/audit/export.rs) POSTs it to the configured webhook and
-- deletes the row once the receiver answered 2xx. Never edit once released: add a new file.
--
-- seq is the audit row's seq; chain its chain key (workspace id, '' for events of none). Only the
-- lowest seq of a chain may be sent (per-workspace order): appends to one chain are serialised by
-- the chain lock, so within a chain seq order is append (and commit) order.
-- lease_owner/lease_until: a claim by one export task (one per replica); a row whose lease is
-- live is not claimed again, so two replicas never send a chain's events side by side.
-- next_attempt_at: exponential backoff after a failed delivery. Times are epoch milliseconds.
-- No foreign key to audit_events: the audit log is append-only and never purged.
create table audit_outbox (
    seq             bigint not null primary key,
    chain           text   not null,
    created_at      bigint not null,
    attempts        bigint not null default 0,
    next_attempt_at bigint not null,
    lease_owner     text,
    lease_until     bigint,
    last_error      text
);
-- Finds each chain's head (its lowest seq).
create index audit_outbox_chain_seq on audit_outbox (chain, seq);
