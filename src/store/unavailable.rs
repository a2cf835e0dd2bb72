//! Why the database could not be opened at start, in words an operator can act on: which server
//! (host and port, user and database; never the password) or which SQLite file, and the cause
//! (refused, timed out, authentication, missing database, unwritable path).

use super::StoreError;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use std::str::FromStr as _;
use std::time::Duration;

/// How long the diagnosis waits for a TCP connection to the PostgreSQL server, when the pool
/// only said that it timed out: long enough for a healthy server across a network, short enough
/// not to delay the error much.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `error`, from connecting to `url`, as a [`StoreError::Unavailable`] that names the target and
/// the cause. Errors that are not about reaching the database pass through unchanged.
pub(super) async fn diagnose(url: &str, error: StoreError) -> StoreError {
    let StoreError::Backend(error) = error else {
        return error;
    };
    if url.starts_with("sqlite:") {
        let path = SqliteConnectOptions::from_str(url)
            .map(|options| options.get_filename().display().to_string())
            .unwrap_or_else(|_| "?".to_owned());
        return StoreError::Unavailable(format!(
            "cannot open the SQLite database {path}: {}",
            sqlite_cause(&error)
        ));
    }
    let Ok(options) = PgConnectOptions::from_str(url) else {
        return StoreError::Backend(error);
    };
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let target = format!(
        "PostgreSQL at {host}:{port} (user {:?}, database {:?})",
        options.get_username(),
        options.get_database().unwrap_or(options.get_username()),
    );
    let cause = match &error {
        sqlx::Error::Io(io) => io_cause(io),
        sqlx::Error::PoolTimedOut => probe(&host, port).await,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if code.starts_with("28") => {
                format!("authentication failed: {}", db.message())
            }
            Some("3D000") => format!("no such database: {}", db.message()),
            _ => db.message().to_owned(),
        },
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!("cannot connect to {target}: {cause}"))
}

fn sqlite_cause(error: &sqlx::Error) -> String {
    match error {
        // SQLITE_CANTOPEN: the usual reason is the directory.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("14") => format!(
            "{} (does its directory exist, and may this user write there?)",
            db.message()
        ),
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io_cause(io),
        other => other.to_string(),
    }
}

fn io_cause(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the server running and listening there?)".to_owned()
        }
        std::io::ErrorKind::TimedOut => "timed out".to_owned(),
        std::io::ErrorKind::PermissionDenied => format!("permission denied ({error})"),
        _ => error.to_string(),
    }
}

/// The pool gave up without saying why (it retries refused connections until its timeout):
/// try the TCP connection once to tell a refused port from an unreachable host from a server
/// that accepts but never completes the login.
async fn probe(host: &str, port: u16) -> String {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Err(error)) => io_cause(&error),
        Err(_) => format!(
            "timed out (no answer from {host}:{port} within {}s: a firewall, or the wrong host?)",
            PROBE_TIMEOUT.as_secs()
        ),
        Ok(Ok(_)) => {
            "timed out: the server accepts connections but did not complete the login".to_owned()
        }
    }
}
