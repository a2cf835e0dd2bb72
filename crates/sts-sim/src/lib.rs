//! Built-in stand-ins for GitHub and for a GitHub Actions OIDC issuer, served on loopback.
//!
//! They back `serve --dev`, `demo`, the tests and the benchmarks. They behave as GitHub documents
//! it (App JWT checked, 404/422/403, revoked tokens stop working); they are not for production.
//! The GitHub simulator also serves its repositories over git smart HTTP(S) ([`git`]), with a
//! throwaway loopback CA ([`tls`]), so that the real `git` can clone with minted tokens.
//!
//! A crate of its own, independent of the broker: `sts-broker` links it only through its `dev`
//! feature (on by default), so a `--no-default-features` build carries no simulator code.

/// `impl Debug` that prints only the named fields and marks the others as left out (`..`): for
/// types that hold keys or tokens, or whose other fields say nothing worth a log line.
macro_rules! debug_showing {
    ($type:ident { $($field:ident),* $(,)? }) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($type))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

pub mod git;
pub mod github;
pub mod keys;
pub mod oidc;
mod serving;
pub mod testing;
pub mod tls;
