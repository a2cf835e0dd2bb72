//! WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints inside the commit that grows the WAL past 1,000 pages: that
//! commit copies the WAL back into the database file and syncs it, while every writer of the
//! next batch waits. Under load that was the writer thread's largest cost after the WAL writes
//! themselves. So the store's connections do not checkpoint on commit; this thread runs a
//! `PASSIVE` checkpoint (which never blocks writers or readers) on its own connection, on the
//! other core, every [`CHECKPOINT_INTERVAL`]. See <https://www.sqlite.org/wal.html#ckpt>.

use super::super::{StoreError, StoreResult};
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How often the WAL is copied back. Short enough that the WAL stays a few megabytes under a
/// flood (a few hundred batches a second, each some pages), long enough that an idle broker
/// spends nothing on it.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// The checkpointer runs until this is dropped.
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

/// Start checkpointing the WAL of the database at `path`.
pub(super) fn start(path: &Path, busy: Duration) -> StoreResult<Checkpointer> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".to_owned())
        .spawn(move || loop {
            let last = match stopped.recv_timeout(CHECKPOINT_INTERVAL) {
                Err(RecvTimeoutError::Timeout) => false,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            };
            if let Err(error) = conn.query_row("pragma wal_checkpoint(passive)", [], |_| Ok(())) {
                tracing::warn!(%error, "WAL checkpoint failed; the next one retries");
            }
            if last {
                break;
            }
        });
    spawned
        .map_err(|e| StoreError::Unavailable(format!("cannot start the WAL checkpointer: {e}")))?;
    Ok(Checkpointer { _stop: stop })
}
