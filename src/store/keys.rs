//! The session signing keys' life in the store (migration 0005): re-sealing them under the
//! current token-sealing key (see `crypto`), rotating the active key, listing every kept key and
//! deleting those retired (see `session::keys`).
//!
//! A rotation deactivates the active key and inserts the new one in one transaction, so a reader
//! always finds exactly one active key (the partial unique index `signing_keys_one_active` makes
//! a second one impossible). Rotations are serialised: on PostgreSQL by a table lock that plain
//! reads pass, on SQLite by `BEGIN IMMEDIATE` on the writer connection.

use super::codec::{from_ms_opt, to_ms};
use super::rows::SigningKeyRow;
use super::sql::SharedSql as _;
use super::{postgres::PgStore, sqlite::SqliteStore, SigningKeyRecord, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::{Postgres, Sqlite};
use time::OffsetDateTime;

/// A kept signing key and where it is in its life.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSigningKey {
    /// The key (private half sealed).
    pub record: SigningKeyRecord,
    /// Whether it signs new sessions (exactly one key does).
    pub active: bool,
    /// When a rotation replaced it; `None` while active.
    pub deactivated_at: Option<OffsetDateTime>,
}

/// Key rotation in the store. Every [`Store`](super::Store) has it.
#[async_trait]
pub trait SigningKeyRotation {
    /// Replace the sealed private key of signing key `record.kid` with `record`'s. `false` if
    /// no such key exists.
    async fn reseal_signing_key(&self, record: &SigningKeyRecord) -> StoreResult<bool>;
    /// Every kept signing key, oldest first (by creation, then kid).
    async fn list_signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>>;
    /// In one transaction: deactivate the active key (stamping `at`) and store `new` as the
    /// active key. Returns the kid of the key it replaced (`None` when there was none).
    /// Concurrent rotations run one after the other, each replacing the one before.
    async fn rotate_signing_key(
        &self,
        new: &SigningKeyRecord,
        at: OffsetDateTime,
    ) -> StoreResult<Option<String>>;
    /// Delete the keys deactivated before `deactivated_before`; the active key never. Returns
    /// the deleted kids, sorted.
    async fn purge_signing_keys(
        &self,
        deactivated_before: OffsetDateTime,
    ) -> StoreResult<Vec<String>>;
}

/// `signing_keys` row with its rotation columns.
#[derive(sqlx::FromRow)]
struct KeyStateRow {
    #[sqlx(flatten)]
    key: SigningKeyRow,
    active: bool,
    deactivated_at: Option<i64>,
}

impl KeyStateRow {
    fn into_model(self) -> StoreResult<StoredSigningKey> {
        Ok(StoredSigningKey {
            record: self.key.into_model()?,
            active: self.active,
            deactivated_at: from_ms_opt(self.deactivated_at, "signing_keys.deactivated_at")?,
        })
    }
}

const LIST_KEYS: &str = r#"select kid, algorithm, private_key_sealed, public_jwk, created_at,
                                  active, deactivated_at
                           from signing_keys order by created_at, kid"#;
const DEACTIVATE_ACTIVE_KEY: &str = r#"update signing_keys set active = false, deactivated_at = $1
                                       where active returning kid"#;
const PURGE_RETIRED_KEYS: &str = r#"delete from signing_keys
                                    where not active and deactivated_at < $1 returning kid"#;

/// The store's statements for `$db`: writes on its write pool `$pool`, the list on its read
/// pool. `$begin` opens the rotation's transaction and `$lock` (if any) is its first statement:
/// together they make a concurrent rotation wait for this one's commit, so it deactivates the key
/// this one inserted rather than finding no active key and colliding with ours on the one-active
/// index.
macro_rules! keys_impl {
    ($store:ty, $db:ty, $pool:ident, $begin:expr, $lock:expr) => {
        #[async_trait]
        impl SigningKeyRotation for $store {
            async fn reseal_signing_key(&self, record: &SigningKeyRecord) -> StoreResult<bool> {
                let done = sqlx::query(
                    r#"update signing_keys set private_key_sealed = $1 where kid = $2"#,
                )
                .bind(&record.private_key_sealed)
                .bind(&record.kid)
                .execute(&self.$pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
                // A read, on the read pool: every replica makes it every refresh period, and on
                // SQLite the write connection is the group-commit writer's.
                let rows: Vec<KeyStateRow> =
                    sqlx::query_as(LIST_KEYS).fetch_all(&self.pool).await?;
                rows.into_iter().map(KeyStateRow::into_model).collect()
            }

            async fn rotate_signing_key(
                &self,
                new: &SigningKeyRecord,
                at: OffsetDateTime,
            ) -> StoreResult<Option<String>> {
                let mut tx = self.$pool.begin_with($begin).await?;
                let lock: Option<&'static str> = $lock;
                if let Some(lock) = lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let previous: Option<String> = sqlx::query_scalar(DEACTIVATE_ACTIVE_KEY)
                    .bind(to_ms(at))
                    .fetch_optional(&mut *tx)
                    .await?;
                let inserted = <$db>::insert_signing_key(new)?.execute(&mut *tx).await?;
                // The insert does nothing on a conflict: only a key activated past our lock (a
                // bug) or a reused kid could cause one, and neither may pass for a rotation.
                if inserted.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "signing key {} not stored",
                        new.kid
                    )));
                }
                tx.commit().await?;
                Ok(previous)
            }

            async fn purge_signing_keys(
                &self,
                deactivated_before: OffsetDateTime,
            ) -> StoreResult<Vec<String>> {
                let mut kids: Vec<String> = sqlx::query_scalar(PURGE_RETIRED_KEYS)
                    .bind(to_ms(deactivated_before))
                    .fetch_all(&self.$pool)
                    .await?;
                kids.sort_unstable();
                Ok(kids)
            }
        }
    };
}

// SQLite: the single writer connection, with the write lock taken at BEGIN (see `sqlite/mod.rs`).
keys_impl!(SqliteStore, Sqlite, writer, "begin immediate", None);
// PostgreSQL: EXCLUSIVE mode lets plain reads (every replica's key reloads) through but not a
// second rotation, nor a first key stored by `load_or_store_signing_key`.
keys_impl!(
    PgStore,
    Postgres,
    pool,
    "begin",
    Some("lock table signing_keys in exclusive mode")
);
