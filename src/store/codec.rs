//! Helpers both backends share: timestamp and JSON codecs, and database error classification.

use super::{StoreError, StoreResult};
use serde::{de::DeserializeOwned, Serialize};
use time::OffsetDateTime;

/// Nanoseconds per millisecond: the schema keeps epoch milliseconds.
const NANOS_PER_MILLI: i128 = 1_000_000;

/// Epoch milliseconds (UTC) of `t`, rounded down; sub-millisecond precision is not stored.
pub(super) fn to_ms(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos().div_euclid(NANOS_PER_MILLI);
    // OffsetDateTime spans years ±9999, far inside i64 milliseconds.
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// The UTC instant of epoch milliseconds read from column `what`.
pub(super) fn from_ms(ms: i64, what: &str) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * NANOS_PER_MILLI)
        .map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
}

/// Optional variant of [`from_ms`].
pub(super) fn from_ms_opt(ms: Option<i64>, what: &str) -> StoreResult<Option<OffsetDateTime>> {
    ms.map(|ms| from_ms(ms, what)).transpose()
}

/// `value` as JSON text for a TEXT column.
pub(super) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Parse JSON text read from column `what`.
pub(super) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The snake_case string serde gives a unit enum variant (`AuditKind`, `Outcome`).
pub(super) fn enum_str<T: Serialize>(value: &T, what: &str) -> StoreResult<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("{what} is not a string enum"))),
    }
}

/// Whether `e` is a unique or primary-key violation.
pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation))
}

/// Whether `e` is a foreign-key violation (the referenced workspace or session is missing).
pub(super) fn is_fk_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| matches!(d.kind(), sqlx::error::ErrorKind::ForeignKeyViolation))
}

/// Map a write error whose unique violations were handled already: foreign-key violations become
/// `NotFound` of `missing`, anything else `Backend`.
pub(super) fn missing_or_backend(e: sqlx::Error, missing: &str) -> StoreError {
    if is_fk_violation(&e) {
        StoreError::NotFound(missing.to_owned())
    } else {
        StoreError::Backend(e)
    }
}

/// Map a write error: unique violations become `on_unique`, foreign-key violations `NotFound`
/// of `missing`, anything else `Backend`.
pub(super) fn write_err(
    e: sqlx::Error,
    on_unique: impl FnOnce() -> StoreError,
    missing: &str,
) -> StoreError {
    if is_unique_violation(&e) {
        on_unique()
    } else {
        missing_or_backend(e, missing)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn milliseconds_round_trip_and_sub_millisecond_precision_is_dropped() {
        let t = datetime!(2026-05-01 12:00:00.123_456_789 UTC);
        let ms = to_ms(t);
        assert_eq!(ms, 1_777_636_800_123);
        assert_eq!(
            from_ms(ms, "t").unwrap(),
            datetime!(2026-05-01 12:00:00.123 UTC)
        );
    }

    #[test]
    fn instants_before_the_epoch_round_down() {
        let t = datetime!(1969-12-31 23:59:59.999_5 UTC);
        assert_eq!(to_ms(t), -1);
    }

    #[test]
    fn an_out_of_range_timestamp_is_corrupt() {
        assert!(matches!(
            from_ms(i64::MAX, "expires_at"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn enums_are_stored_as_their_serde_names() {
        use crate::audit::{AuditKind, Outcome};
        assert_eq!(
            enum_str(&AuditKind::SessionRevoke, "kind").unwrap(),
            "session_revoke"
        );
        assert_eq!(enum_str(&Outcome::Denied, "outcome").unwrap(), "denied");
    }
}
