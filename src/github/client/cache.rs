//! Short-lived, single-flight caches of installation lookups and repository lists.
//!
//! Each is a `moka::future::Cache` read through `try_get_with`, which coalesces concurrent misses
//! of one key into one evaluation of the loader: the other callers wait for it and share its
//! value or its error. Thirty mints of one CI fan-out arriving just after the repository list
//! expired therefore cost one listing, not thirty (a listing of a 10,000-repository installation
//! is a mint, a hundred pages and a revoke). moka rather than a hand-rolled map of in-flight
//! futures because it also gives what the caches need around that: per-entry lifetimes (a 404
//! lives shorter than a hit), a bound on entries, and a loader whose caller is cancelled handing
//! over to the next waiter instead of failing them all. An `Err` from a loader is handed to the
//! callers waiting at that moment and never inserted, so a failure is not cached at all; only a
//! 404, stored as `None`, is, for [`INSTALLATION_NEGATIVE_CACHE_TTL`].

use super::super::{Installation, Repository};
use moka::future::Cache;
use moka::Expiry;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Installation lookups are cached this long: installations change rarely, and a suspension or
/// uninstall is still caught by the mint call itself, which is never cached.
pub(super) const INSTALLATION_CACHE_TTL: Duration = Duration::from_secs(60);
/// A 404 is remembered this long, so callers naming an owner without the App cannot make us call
/// GitHub on every request, yet a fresh install is seen within half a minute.
pub(super) const INSTALLATION_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Repository lists are cached this long: listing costs a mint, several pages and a revoke.
pub(super) const REPOSITORIES_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries per cache. Owners come from callers, so the cache must not grow without bound; when
/// full, moka evicts the entries least likely to be used again.
pub(super) const MAX_CACHE_ENTRIES: u64 = 10_000;

/// Installations by lowercase owner login or by id; `None` is a remembered 404.
pub(super) type InstallationCache<K> = Cache<K, Option<Installation>>;
/// Repository lists by installation id, shared rather than copied on every hit.
pub(super) type RepositoryCache = Cache<i64, Arc<Vec<Repository>>>;

/// An installation cache: hits live [`INSTALLATION_CACHE_TTL`], 404s
/// [`INSTALLATION_NEGATIVE_CACHE_TTL`]. Invalidation closures are on so that a mint refused for a
/// suspension or an uninstall can drop every entry about that installation, whatever its key.
pub(super) fn installation_cache<K>() -> InstallationCache<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(MAX_CACHE_ENTRIES)
        .expire_after(InstallationExpiry)
        .support_invalidation_closures()
        .build()
}

/// The repository-list cache: entries live [`REPOSITORIES_CACHE_TTL`].
pub(super) fn repository_cache() -> RepositoryCache {
    Cache::builder()
        .max_capacity(MAX_CACHE_ENTRIES)
        .time_to_live(REPOSITORIES_CACHE_TTL)
        .build()
}

/// Lifetime of an installation entry by what it holds, from its latest write: an entry
/// overwritten by a fresher lookup (the by-owner lookup also fills the by-id cache) starts over.
struct InstallationExpiry;

impl InstallationExpiry {
    fn ttl(value: &Option<Installation>) -> Duration {
        match value {
            Some(_) => INSTALLATION_CACHE_TTL,
            None => INSTALLATION_NEGATIVE_CACHE_TTL,
        }
    }
}

impl<K> Expiry<K, Option<Installation>> for InstallationExpiry {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Option<Installation>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Self::ttl(value))
    }

    fn expire_after_update(
        &self,
        _key: &K,
        value: &Option<Installation>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::ttl(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_404_lives_shorter_than_a_hit_on_creation_and_on_overwrite() {
        let hit = Some(Installation {
            id: 1,
            account_login: "Acme".into(),
            account_id: 1001,
            account_type: "Organization".into(),
            repository_selection: "all".into(),
            permissions: BTreeMap::new(),
            suspended: false,
        });
        let now = Instant::now();
        let remaining = Some(Duration::from_secs(1));
        for (value, ttl) in [
            (hit, INSTALLATION_CACHE_TTL),
            (None, INSTALLATION_NEGATIVE_CACHE_TTL),
        ] {
            let expiry = InstallationExpiry;
            assert_eq!(expiry.expire_after_create(&1_i64, &value, now), Some(ttl));
            assert_eq!(
                expiry.expire_after_update(&1_i64, &value, now, remaining),
                Some(ttl)
            );
        }
        assert!(INSTALLATION_NEGATIVE_CACHE_TTL < INSTALLATION_CACHE_TTL);
    }
}
