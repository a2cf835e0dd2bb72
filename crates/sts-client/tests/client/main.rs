//! `sts-client` end to end: the real binary against a real broker (in this process) with the
//! GitHub and OIDC issuer simulators, and the real `git` where git is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod actions;
mod fake;
mod flow;
mod git;
mod helpers;
