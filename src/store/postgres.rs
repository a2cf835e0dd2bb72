//! PostgreSQL backend, for stateless replicas: migrations in `migrations/postgres`.

/// PostgreSQL store.
pub(crate) struct PgStore {}

/// Connect, configure and migrate; the store as a trait object.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
) -> super::StoreResult<std::sync::Arc<dyn super::Store>> {
    let _ = (url, max_connections);
    unimplemented!()
}
