-- Session signing key rotation: a rotation deactivates the active key and inserts a new active
-- one in one transaction; the previous key stays (it still verifies the sessions it signed)
-- until `sts-broker session-key retire` deletes it, once every session it could have signed is
-- past its revoke grace. deactivated_at is when it stopped being active (epoch milliseconds, like
-- every time in this database); null while active. The partial unique index
-- signing_keys_one_active (0001) still keeps one active key. Never edit once released.
alter table signing_keys add column deactivated_at bigint;
