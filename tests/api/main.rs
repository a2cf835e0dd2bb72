//! HTTP integration tests: the real server on a random port, against the GitHub simulator and the
//! OIDC issuer simulator.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors by design"
)]

mod helpers;

mod admin;
mod atmos;
mod audit_events;
mod chaos;
mod edges;
mod exchange;
mod explain;
mod integrity;
mod leaks;
mod mint;
mod replicas;
mod revoke;
mod survival;
mod versions;
mod wire;
