//! PostgreSQL only: the writer's bulk exchange write (`postgres/bulk.rs`), called directly, so
//! that its outcomes and rows are checked whether or not the writer's batches happen to hold
//! several exchanges; the cases of `batching` check the writer that calls it.

use super::fixtures::*;
use super::harness::{Raw, Schema};
use crate::audit::verify::verify;
use crate::store::batch::ExchangeWrite;
use crate::store::postgres::bulk::EXCHANGES;
use futures::FutureExt as _;
use std::panic::AssertUnwindSafe;

fn write(jti: &str, session_id: &str, workspace_id: &str) -> ExchangeWrite {
    ExchangeWrite {
        jti: replay_key(jti, at(10)),
        session: session(session_id, workspace_id),
        audit: audit(Some(workspace_id), &format!("e-{session_id}")),
    }
}

/// Run `case` with a store on a fresh schema and a pool into it around the store.
async fn with_schema<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>, sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let schema = Schema::create().await;
    let store = schema.store().await;
    let Raw::Postgres(pool) = schema.raw().await else {
        unreachable!("a postgres schema gives a postgres pool")
    };
    let outcome = AssertUnwindSafe(case(store, pool)).catch_unwind().await;
    schema.finish(outcome).await;
}

#[tokio::test]
async fn postgres_bulk_exchanges_refuse_replays_and_chain_every_event_as_one_by_one() {
    with_schema(|store, pool| async move {
        with_workspaces(&*store, &["acme", "globex"]).await;
        exchange(
            &*store,
            &replay_key("jti-used", at(10)),
            "ses-0",
            "acme",
            "e-ses-0",
        )
        .await
        .unwrap();
        let writes = [
            write("jti-1", "ses-1", "acme"),
            write("jti-2", "ses-2", "globex"),
            write("jti-1", "ses-3", "globex"),
            write("jti-used", "ses-4", "acme"),
            write("jti-3", "ses-5", "acme"),
        ];
        let batch: Vec<&ExchangeWrite> = writes.iter().collect();
        let mut tx = pool.begin().await.unwrap();
        let outcomes = EXCHANGES(&mut tx, &batch).await.unwrap();
        tx.commit().await.unwrap();

        let replays: Vec<bool> = outcomes
            .iter()
            .map(|o| match o {
                Ok(()) => false,
                Err(StoreError::Replay) => true,
                Err(other) => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(replays, [false, false, true, true, false]);
        for (id, stored) in [
            ("ses-1", true),
            ("ses-2", true),
            ("ses-3", false),
            ("ses-4", false),
            ("ses-5", true),
        ] {
            let session = store.get_session(id).await.unwrap();
            assert_eq!(session.is_some(), stored, "{id}");
            if let Some(session) = session {
                assert_eq!(session, super::fixtures::session(id, &session.workspace_id));
            }
        }
        // Appended after the event stored one by one, in batch order, each chain on its own.
        assert_eq!(
            audit_actions(&*store, "acme").await,
            ["e-ses-5", "e-ses-1", "e-ses-0"]
        );
        assert_eq!(audit_actions(&*store, "globex").await, ["e-ses-2"]);
        let report = verify(&*store, None).await.unwrap();
        assert!(report.intact(), "{report}");
        assert_eq!((report.chains, report.events), (2, 4));
        assert_eq!(store.outbox_backlog().await.unwrap().pending, 4);

        // The writer goes one by one after the next exchanges: they continue the same chains.
        exchange(
            &*store,
            &replay_key("jti-4", at(10)),
            "ses-6",
            "acme",
            "e-ses-6",
        )
        .await
        .unwrap();
        let report = verify(&*store, None).await.unwrap();
        assert!(report.intact(), "{report}");
        assert_eq!(report.events, 5);
    })
    .await;
}

#[tokio::test]
async fn postgres_bulk_exchanges_fail_whole_when_one_cannot_be_written() {
    with_schema(|store, pool| async move {
        with_workspaces(&*store, &["acme"]).await;
        // A workspace gone meanwhile: the caller (the writer) must learn of it and roll back,
        // then write each exchange on its own to give each its own answer.
        let writes = [
            write("jti-1", "ses-1", "acme"),
            write("jti-2", "ses-2", "gone"),
        ];
        let batch: Vec<&ExchangeWrite> = writes.iter().collect();
        let mut tx = pool.begin().await.unwrap();
        let failed = EXCHANGES(&mut tx, &batch).await;
        assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
    })
    .await;
}
