//! `sts-client` end to end: the real binary against a real broker (in this process) with the
//! GitHub and OIDC issuer simulators, and the real `git` where git is named.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors by design"
)]

mod actions;
mod fake;
mod flow;
mod ghes;
mod git;
mod helpers;
