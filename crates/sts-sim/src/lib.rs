//! Built-in stand-ins for GitHub and for a GitHub Actions OIDC issuer, served on loopback.
//!
//! They back `serve --dev`, `demo`, the tests and the benchmarks. They behave as GitHub documents
//! it (App JWT checked, 404/422/403, revoked tokens stop working); they are not for production.
//! The GitHub simulator also serves its repositories over git smart HTTP(S) ([`git`]), with a
//! throwaway loopback CA ([`tls`]), so that the real `git` can clone with minted tokens.
//!
//! A crate of its own, independent of the broker: `sts-broker` links it only through its `dev`
//! feature (on by default), so a `--no-default-features` build carries no simulator code.

pub mod git;
pub mod github;
pub mod keys;
pub mod oidc;
pub mod tls;
