//! sts-broker: a security token service for GitHub.
//!
//! CI jobs trade a GitHub Actions OIDC token for a broker session, then for short-lived,
//! least-privilege GitHub App installation tokens chosen by the workspace's trust policies.
//! Every issuance, denial and revocation is audited.

pub mod app;
pub mod audit;
pub mod config;
pub mod crypto;
#[cfg(feature = "dev")]
pub mod demo;
#[cfg(feature = "dev")]
pub mod dev;
pub mod flow;
pub mod github;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
