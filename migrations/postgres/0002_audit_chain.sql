-- Hash chain of the audit log (see docs/architecture.md, "Audit hash chain"), and an index for
-- the retention purge of sessions. Never edit once released: add a new numbered file instead.
--
-- Each workspace's events form a chain, events of no workspace one more (chain key ''):
-- chain_seq is the event's place in its chain (1, 2, 3…), prev_hash the hash of the event before
-- (64 zeros for the first), hash the SHA-256 of every other column. The broker computes them as
-- it appends; rows stored before this migration are linked, per chain in seq order, by the
-- first broker (or `sts-broker migrate`) that starts on it. Until then they are NULL.
-- Replicas serialise appends to one chain with a transaction-scoped advisory lock (postgres.rs);
-- the unique index below is the backstop should two ever compute the same place.
alter table audit_events add column chain_seq bigint;
alter table audit_events add column prev_hash text;
alter table audit_events add column hash text;

-- One event per place in a chain; also the index that finds a chain's head and walks it.
create unique index audit_events_chain
    on audit_events (coalesce(workspace_id, ''), chain_seq);
-- The rows still to be linked (none, once a broker has started).
create index audit_events_unchained on audit_events (seq) where chain_seq is null;

-- The retention purge deletes sessions by expiry.
create index sessions_expires_at on sessions (expires_at);
