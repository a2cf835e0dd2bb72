//! WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints inside the commit that grows the WAL past 1,000 pages: that
//! commit copies the WAL back into the database file and syncs it, while every writer of the
//! next batch waits. Under load that was the writer thread's largest cost after the WAL writes
//! themselves. So the store's connections do not checkpoint on commit; this thread runs a
//! `PASSIVE` checkpoint (which never blocks writers or readers) on its own connection, on the
//! other core, every [`CHECKPOINT_INTERVAL`]. See <https://www.sqlite.org/wal.html#ckpt>.
//!
//! A passive checkpoint never shortens the WAL's file, and under a steady flood the WAL does not
//! even start over: SQLite does so only when a writer begins after every frame was copied back
//! and no reader still reads from the WAL, and with reads and writes arriving all the time that
//! moment does not come (the "checkpoint starvation" of the page above). Under wrk the WAL grew
//! by ~130 MB a second, to 1.2 GB in a 10 s run. Every connection that writes therefore cuts the
//! file back to [`WAL_SIZE_LIMIT`] when it starts the WAL over (`journal_size_limit`), which the
//! first pause after a flood allows. Forcing the start-over during the flood (a `RESTART`
//! checkpoint past a threshold) was measured and left out: it stalls the writer while it copies
//! the backlog, and took exchange p99 from 7 ms to 91 ms (64 MiB threshold) or 356 ms (1 GiB).

use super::super::{StoreError, StoreResult};
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How often the WAL is copied back. Short enough that the copy keeps close behind the writes
/// (a few hundred batches a second, each some pages, under a flood), so that the first pause
/// after it finds every frame copied; long enough that an idle broker spends nothing on it.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Bytes the WAL's file keeps when a write starts it over (`journal_size_limit`, set on every
/// connection that writes): what the WAL's file keeps on disk after a flood, and what later
/// batches rewrite without growing the file.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of the WAL (not copied back or not), as a passive checkpoint reports them.
    fn wal_frames(conn: &Connection) -> i64 {
        conn.query_row("pragma wal_checkpoint(passive)", [], |row| row.get(1))
            .unwrap()
    }

    #[test]
    fn a_wal_that_starts_over_is_cut_back_to_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "pragma journal_mode = wal; pragma wal_autocheckpoint = 0;
                 create table t (x blob);",
            )
            .unwrap();
        writer
            .pragma_update(None, "journal_size_limit", 64 * 1024)
            .unwrap();
        let checkpointer = Connection::open(&path).unwrap();
        let wal_bytes = || {
            std::fs::metadata(dir.path().join("wal.db-wal"))
                .unwrap()
                .len()
        };
        for _ in 0..200 {
            writer
                .execute("insert into t (x) values (zeroblob(4000))", [])
                .unwrap();
        }
        assert!(wal_frames(&checkpointer) > 200);
        assert!(wal_bytes() > 800 * 1024, "{} bytes", wal_bytes());

        // Every frame copied back, no reader on the WAL: the next write starts it over.
        writer
            .execute("insert into t (x) values (zeroblob(4000))", [])
            .unwrap();
        let frames = wal_frames(&checkpointer);
        assert!(
            frames < 10,
            "the write started the WAL over: {frames} frames"
        );
        assert!(wal_bytes() <= 64 * 1024, "cut back: {} bytes", wal_bytes());
    }
}
