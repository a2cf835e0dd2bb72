//! `sts-broker`: the service and its operator commands. A shim over the library.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use sts_broker::app::App;
use sts_broker::config::Config;

#[derive(Parser)]
#[command(
    name = "sts-broker",
    version,
    about = "A security token service for GitHub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Configuration file (TOML).
        #[cfg_attr(feature = "dev", arg(long, required_unless_present = "dev"))]
        #[cfg_attr(not(feature = "dev"), arg(long, required = true))]
        config: Option<PathBuf>,
        /// Run with built-in GitHub and OIDC simulators, SQLite in a temp dir, a seeded workspace.
        #[cfg(feature = "dev")]
        #[arg(long, conflicts_with = "config")]
        dev: bool,
        /// Listen address in dev mode.
        #[cfg(feature = "dev")]
        #[arg(long, default_value = "127.0.0.1:8080", requires = "dev")]
        listen: String,
    },
    /// Run the whole flow once against the simulators and tell it as a story.
    #[cfg(feature = "dev")]
    Demo,
    /// Run database migrations and exit.
    Migrate {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the configuration and exit.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Probe a running broker's /healthz and /readyz on its configured listen address; exit 0 when
    /// both answer 2xx, else 1 (for container HEALTHCHECKs: the image has no curl).
    Healthcheck {
        /// Configuration file (TOML) of the broker to probe.
        #[arg(long)]
        config: PathBuf,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check and test trust policies offline (no GitHub, no database).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Rotate, list and retire the session signing keys (running replicas follow, no restart).
    SessionKey {
        #[command(subcommand)]
        command: SessionKeyCommand,
    },
}

#[derive(Subcommand)]
enum SessionKeyCommand {
    /// Make a new key the one that signs; the previous one keeps verifying its sessions.
    Rotate {
        /// Configuration file (TOML) of the broker whose keys to rotate.
        #[arg(long)]
        config: PathBuf,
    },
    /// List the kept keys: id, creation, active or since when deactivated. No key material.
    List {
        /// Configuration file (TOML) of the broker whose keys to list.
        #[arg(long)]
        config: PathBuf,
    },
    /// Drop the deactivated keys no usable session needs any more, and print them.
    Retire {
        /// Configuration file (TOML) of the broker whose keys to retire.
        #[arg(long)]
        config: PathBuf,
        /// Drop every deactivated key now, ending the sessions they signed (after a compromise).
        #[arg(long)]
        now: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files (JSON or YAML): exit 0 valid (warnings printed), 1 invalid.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Run test cases against a policy: exit 0 all pass, 1 some fail, 2 bad input.
    Test {
        /// The policy file.
        policy: PathBuf,
        /// The cases file (YAML or JSON).
        #[arg(long)]
        cases: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

impl From<OutputFormat> for sts_broker::policy_cli::Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Text => Self::Text,
            OutputFormat::Json => Self::Json,
        }
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the audit log's hash chains from the database, without changing it. Exits 0
    /// when intact, 1 naming the first event of each broken chain (content or link mismatch),
    /// 2 on a usage, configuration or database error.
    Verify {
        /// Configuration file (TOML) of the broker whose database to check.
        #[arg(long)]
        config: PathBuf,
        /// Only this workspace's chain (`''`: the events of no workspace).
        #[arg(long)]
        workspace: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config: Some(path), ..
        } => {
            let config = Config::load(Some(&path))?;
            let _guard = sts_broker::telemetry::init(
                config.telemetry.log_format,
                config.telemetry.otlp_endpoint.as_deref(),
            )?;
            let listener = sts_broker::server::bind(&config.server.listen).await?;
            let admin = match &config.server.admin_listen {
                Some(addr) => Some(sts_broker::server::bind(addr).await?),
                None => None,
            };
            let app = App::build(config).await?;
            let broker = sts_broker::server::spawn_with_admin(app, listener, admin)?;
            if let Some(admin) = broker.admin_addr {
                tracing::info!(
                    admin_listen = %admin,
                    "metrics and admin API on {admin} only"
                );
            }
            tracing::info!(
                listen = %broker.addr,
                version = env!("CARGO_PKG_VERSION"),
                commit = sts_broker::metrics::BUILD_COMMIT,
                "sts-broker listening on {}",
                broker.addr
            );
            sts_broker::server::run_until_stopped(broker).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "dev")]
        Command::Serve {
            dev: true, listen, ..
        } => {
            let _guard = sts_broker::telemetry::init(sts_broker::config::LogFormat::Text, None)?;
            sts_broker::dev::serve_dev(&listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => anyhow::bail!("give --config FILE or --dev"),
        #[cfg(feature = "dev")]
        Command::Demo => {
            if sts_broker::demo::run().await? {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Migrate { config } => {
            let config = Config::load(Some(&config))?;
            use secrecy::ExposeSecret as _;
            let store = sts_broker::store::connect(config.database.url.expose_secret(), 1).await?;
            println!("migrations applied ({} database)", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let loaded = Config::load(Some(&config))?;
            // The `OTEL_*` variables are configuration too: a bad one fails here, not per batch.
            let export = sts_broker::telemetry::export_target(
                loaded.telemetry.otlp_endpoint.as_deref(),
                |name| std::env::var(name).ok(),
            )
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n  - {e}"))?;
            println!("configuration OK: {}", config.display());
            println!("  listen      {}", loaded.server.listen);
            if let Some(admin) = &loaded.server.admin_listen {
                println!("  admin       {admin} (metrics and admin API)");
            }
            println!("  public_url  {}", loaded.server.public_url);
            println!(
                "  github      {} (app {})",
                loaded.github.api_url, loaded.github.app_id
            );
            println!(
                "  issuers     {}",
                loaded
                    .oidc
                    .issuers
                    .iter()
                    .map(|i| i.issuer.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("  traces      {}", export_description(&export));
            println!(
                "  retention   sessions {} days, tokens {} days after expiry",
                loaded.retention.sessions_days, loaded.retention.tokens_days
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { config } => Ok(healthcheck(&config).await),
        Command::Audit {
            command: AuditCommand::Verify { config, workspace },
        } => Ok(audit_verify(&config, workspace.as_deref()).await),
        Command::Policy { command } => Ok(policy(command)),
        Command::SessionKey { command } => {
            use sts_broker::session_key_cli as cli;
            let report = match command {
                SessionKeyCommand::Rotate { config } => {
                    cli::rotate(&Config::load(Some(&config))?).await?
                }
                SessionKeyCommand::List { config } => {
                    cli::list(&Config::load(Some(&config))?).await?
                }
                SessionKeyCommand::Retire { config, now } => {
                    let keep = if now {
                        std::time::Duration::ZERO
                    } else {
                        sts_broker::session::keys::SIGNING_KEY_RETENTION
                    };
                    cli::retire(&Config::load(Some(&config))?, keep).await?
                }
            };
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `healthcheck`: one line on stdout when healthy; the reason on stderr and exit 1 otherwise,
/// including an unreadable configuration (Docker reads only 0 and 1).
async fn healthcheck(config: &Path) -> ExitCode {
    use sts_broker::healthcheck::{probe, probe_base_url};
    let probed = async {
        let config = Config::load(Some(config))?;
        probe(&probe_base_url(&config.server.listen)?).await
    };
    match probed.await {
        Ok(report) => {
            println!("healthy: {}", report.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where traces go, for `check-config`.
fn export_description(export: &sts_broker::telemetry::Export) -> String {
    use sts_broker::telemetry::Export;
    match export {
        Export::Off => "not exported".to_owned(),
        Export::To(url) => format!("OTLP/HTTP to {url}"),
        Export::FromEnv => "OTLP/HTTP as OTEL_EXPORTER_OTLP_* say".to_owned(),
    }
}

/// `audit verify`: the report on stdout; what kept it from verifying on stderr, with exit 2
/// (not 1, which means "tampered").
/// `policy check` / `policy test`: offline, no configuration.
fn policy(command: PolicyCommand) -> ExitCode {
    let report = match command {
        PolicyCommand::Check { files, format } => {
            sts_broker::policy_cli::check(&files, format.into())
        }
        PolicyCommand::Test {
            policy,
            cases,
            format,
        } => sts_broker::policy_cli::test(&policy, &cases, format.into()),
    };
    print!("{}", report.out);
    ExitCode::from(report.code)
}

async fn audit_verify(config: &Path, workspace: Option<&str>) -> ExitCode {
    use secrecy::ExposeSecret as _;
    use sts_broker::audit::verify::{verify_database, EXIT_CANNOT_VERIFY};
    let config = match Config::load(Some(config)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_CANNOT_VERIFY);
        }
    };
    let url = config.database.url.expose_secret();
    match verify_database(url, workspace).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            let database = sts_broker::config::redact_url(url);
            eprintln!(
                "error: cannot read the audit log of {database}: {:#}",
                anyhow::Error::from(e)
            );
            ExitCode::from(EXIT_CANNOT_VERIFY)
        }
    }
}
