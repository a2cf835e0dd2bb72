//! Fresh databases for each case: a temp SQLite file, or a PostgreSQL schema of its own.

use crate::store::{postgres, sqlite, Store};
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::Connection;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Arc;

/// Used when `STS_TEST_DATABASE_URL` is unset: the PostgreSQL of the dev machine and CI.
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Pool size of each store under test; the two-process cases run two of them at once.
const TEST_POOL_SIZE: u32 = 4;

/// `case`, for the backends' runners, which also hand over a [`Raw`]: most cases never go
/// around the store.
pub(super) fn without_raw<F, Fut>(case: F) -> impl FnOnce(Arc<dyn Store>, Raw) -> Fut
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
{
    move |store, _| case(store)
}

/// Run `case` on a fresh SQLite file, with a second way into it around the store.
pub(super) async fn sqlite<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>, Raw) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteConnectOptions::new().filename(dir.path().join("store.db"));
    let store = sqlite::connect_with(options.clone(), TEST_POOL_SIZE)
        .await
        .expect("open the sqlite store");
    assert_eq!(store.backend(), "sqlite");
    let raw = SqlitePool::connect_with(options)
        .await
        .expect("open the sqlite file directly");
    case(store, Raw::Sqlite(raw)).await;
}

/// The database of a case, reached around the store: what someone with write access to the
/// database (not to the broker) can do to it.
pub(super) enum Raw {
    /// The case's SQLite file.
    Sqlite(SqlitePool),
    /// The case's PostgreSQL schema.
    Postgres(PgPool),
}

impl Raw {
    /// Run `sql` with `binds` as text parameters `$1`, `$2`, …
    pub(super) async fn execute(&self, sql: &str, binds: &[&str]) {
        let done = match self {
            Self::Sqlite(pool) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.execute(pool).await.map(|_| ())
            }
            Self::Postgres(pool) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.execute(pool).await.map(|_| ())
            }
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The column names of `table`, sorted.
    pub(super) async fn columns(&self, table: &str) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Self::Sqlite(pool) => {
                sqlx::query_scalar("select name from pragma_table_info($1)")
                    .bind(table)
                    .fetch_all(pool)
                    .await
            }
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "select column_name::text from information_schema.columns
                 where table_schema = current_schema() and table_name = $1",
                )
                .bind(table)
                .fetch_all(pool)
                .await
            }
        }
        .expect("list columns");
        names.sort_unstable();
        names
    }
}

/// A schema of its own in the test database, so tests run in parallel without sharing rows.
pub(super) struct Schema {
    admin: PgConnection,
    name: String,
    options: PgConnectOptions,
    /// The test database's URL, without the schema.
    url: String,
}

impl Schema {
    pub(super) async fn create() -> Self {
        let url = std::env::var("STS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
        let options = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("STS_TEST_DATABASE_URL is not a postgres url: {e}"));
        let mut admin = PgConnection::connect_with(&options)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is unreachable at {}:{} ({e}); the postgres conformance tests \
                     need it: start it or point STS_TEST_DATABASE_URL at one",
                    options.get_host(),
                    options.get_port(),
                )
            });
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("create schema {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test schema");
        let options = options.options([("search_path", name.as_str())]);
        Self {
            admin,
            name,
            options,
            url,
        }
    }

    /// A URL of the schema, as a broker's configuration would name it.
    pub(super) fn url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.url, self.name
        )
    }

    pub(super) async fn store(&self) -> Arc<dyn Store> {
        let store = postgres::connect_with(self.options.clone(), TEST_POOL_SIZE)
            .await
            .expect("open the postgres store");
        assert_eq!(store.backend(), "postgres");
        store
    }

    pub(super) async fn raw(&self) -> Raw {
        let pool = PgPool::connect_with(self.options.clone())
            .await
            .expect("open the test schema directly");
        Raw::Postgres(pool)
    }

    /// Drop the schema, then re-raise a panic of the case, if any.
    pub(super) async fn finish(mut self, outcome: std::thread::Result<()>) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop schema {} cascade",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .expect("drop the test schema");
        self.admin
            .close()
            .await
            .expect("close the admin connection");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Run `case` on a store in a fresh PostgreSQL schema, with a second way into it.
pub(super) async fn postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>, Raw) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = Schema::create().await;
    let store = schema.store().await;
    let raw = schema.raw().await;
    let outcome = AssertUnwindSafe(case(store, raw)).catch_unwind().await;
    schema.finish(outcome).await;
}

/// Run `case` on two stores (two pools, like two broker processes) sharing one fresh schema.
pub(super) async fn postgres_pair<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>, Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = Schema::create().await;
    let first = schema.store().await;
    let second = schema.store().await;
    let outcome = AssertUnwindSafe(case(first, second)).catch_unwind().await;
    schema.finish(outcome).await;
}
