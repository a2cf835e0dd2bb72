//! SQLite backend (the default): one file, WAL, migrations in `migrations/sqlite`.

/// SQLite store.
pub(crate) struct SqliteStore {}

/// Connect, configure and migrate; the store as a trait object.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
) -> super::StoreResult<std::sync::Arc<dyn super::Store>> {
    let _ = (url, max_connections);
    unimplemented!()
}
