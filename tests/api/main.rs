//! HTTP integration tests: the real server on a random port, against the GitHub simulator and the
//! OIDC issuer simulator.

mod helpers;

mod admin;
mod exchange;
mod mint;
mod replicas;
mod revoke;
