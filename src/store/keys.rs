//! Key rotation's one write to the store: re-sealing the session signing key under the current
//! token-sealing key, so the previous sealing key can be dropped (see `crypto`, `session`).

use super::{postgres::PgStore, sqlite::SqliteStore, SigningKeyRecord, StoreResult};
use async_trait::async_trait;

/// Key rotation in the store. Every [`Store`](super::Store) has it.
#[async_trait]
pub trait SigningKeyRotation {
    /// Replace the sealed private key of signing key `record.kid` with `record`'s. `false` if
    /// no such key exists.
    async fn reseal_signing_key(&self, record: &SigningKeyRecord) -> StoreResult<bool>;
}

/// The update, for the store's write pool `$pool`.
macro_rules! reseal_impl {
    ($store:ty, $pool:ident) => {
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
        }
    };
}

reseal_impl!(SqliteStore, writer);
reseal_impl!(PgStore, pool);
