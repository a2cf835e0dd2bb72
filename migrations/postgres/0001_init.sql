-- sts-broker schema for PostgreSQL. Never edit once released: add a new numbered file instead.
-- Timestamps are BIGINT epoch milliseconds (UTC). JSON is TEXT, not JSONB: rows round-trip byte
-- for byte as on SQLite, and JSONB would refuse a \u0000 escape inside a caller-supplied string.

create table workspaces (
    id          text    not null primary key,
    name        text    not null,
    sts_enabled boolean not null default false,
    created_at  bigint  not null,
    updated_at  bigint  not null
);

-- One workspace per installation (installation_id is unique across all workspaces), and one
-- installation per owner within a workspace. GitHub logins are case-insensitive.
create table installation_links (
    installation_id      bigint not null primary key,
    workspace_id         text   not null references workspaces (id) on delete cascade,
    owner                text   not null,
    account_id           bigint not null,
    repository_selection text   not null,
    created_at           bigint not null
);
create unique index installation_links_workspace_owner
    on installation_links (workspace_id, lower(owner));

-- Every version is kept; the current one is the highest version unless it carries deleted_at.
create table policy_versions (
    workspace_id text   not null references workspaces (id) on delete cascade,
    name         text   not null,
    version      bigint not null,
    source       text   not null,
    format       text   not null,
    created_at   bigint not null,
    deleted_at   bigint,
    primary key (workspace_id, name, version)
);

-- The replay guard: an OIDC token is accepted once per (issuer, jti).
create table oidc_replay_keys (
    issuer     text   not null,
    jti        text   not null,
    expires_at bigint not null,
    primary key (issuer, jti)
);
create index oidc_replay_keys_expires_at on oidc_replay_keys (expires_at);

create table sessions (
    id           text   not null primary key,
    workspace_id text   not null references workspaces (id) on delete cascade,
    issuer       text   not null,
    subject      text   not null,
    claims       text   not null,
    created_at   bigint not null,
    expires_at   bigint not null,
    revoked_at   bigint
);
create index sessions_workspace_id on sessions (workspace_id);

create table issued_tokens (
    id              text   not null primary key,
    workspace_id    text   not null references workspaces (id) on delete cascade,
    session_id      text   references sessions (id) on delete cascade,
    installation_id bigint not null,
    owner           text   not null,
    host            text   not null,
    repositories    text,
    permissions     text   not null,
    fingerprint     text   not null,
    sealed_token    text,
    policy_name     text   not null,
    policy_version  bigint not null,
    created_at      bigint not null,
    expires_at      bigint not null,
    revoked_at      bigint
);
create index issued_tokens_workspace_created on issued_tokens (workspace_id, created_at);
create index issued_tokens_session_id on issued_tokens (session_id);
create index issued_tokens_expires_at on issued_tokens (expires_at);

-- No foreign key to workspaces: the audit trail outlives the workspace it describes.
create table audit_events (
    seq          bigserial not null primary key,
    id           text    not null unique,
    time         bigint  not null,
    workspace_id text,
    kind         text    not null,
    outcome      text    not null,
    body         text    not null
);
create index audit_events_workspace_seq on audit_events (workspace_id, seq);

-- Rotation may add rows later; the partial index keeps exactly one active.
create table signing_keys (
    kid                text    not null primary key,
    algorithm          text    not null,
    private_key_sealed text    not null,
    public_jwk         text    not null,
    created_at         bigint  not null,
    active             boolean not null
);
create unique index signing_keys_one_active on signing_keys (active) where active;
