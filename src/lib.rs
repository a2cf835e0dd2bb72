//! sts-broker: a security token service for GitHub.
//!
//! CI jobs trade a GitHub Actions OIDC token for a broker session, then for short-lived,
//! least-privilege GitHub App installation tokens chosen by the workspace's trust policies.
//! Every issuance, denial and revocation is audited.

/// `impl Debug` that prints only the named fields and marks the others as left out (`..`): for
/// types that hold keys or tokens, or whose other fields say nothing worth a log line. Defined
/// before the modules so that every one of them can use it. (The simulators have the same macro;
/// the product build does not link them.)
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

pub mod admin_token;
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
pub mod healthcheck;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod policy_cli;
pub mod server;
pub mod session;
pub mod session_key_cli;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod tests {
    /// A type with a secret beside what may be shown.
    struct Holder {
        name: &'static str,
        count: u32,
        #[expect(dead_code, reason = "only there to be left out of `{:?}`")]
        secret: &'static str,
    }
    debug_showing!(Holder { name, count });

    /// Nothing but the marker that there is more.
    struct Opaque {
        #[expect(dead_code, reason = "only there to be left out of `{:?}`")]
        secret: &'static str,
    }
    debug_showing!(Opaque {});

    #[test]
    fn debug_showing_prints_the_named_fields_and_hides_the_rest() {
        let holder = Holder {
            name: "app",
            count: 2,
            secret: "hunter2",
        };
        assert_eq!(
            format!("{holder:?}"),
            r#"Holder { name: "app", count: 2, .. }"#
        );
        let opaque = Opaque { secret: "hunter2" };
        assert_eq!(format!("{opaque:?}"), "Opaque { .. }");
    }
}
