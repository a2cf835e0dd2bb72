//! PostgreSQL only: the writer's bulk write (`postgres/bulk.rs`), called directly, so that its
//! outcomes and rows are checked whether or not the writer's batches happen to hold several
//! writes; the cases of `batching` check the writer that calls it.

use super::fixtures::*;
use super::harness::{Raw, Schema};
use super::intents::intent;
use crate::audit::verify::verify;
use crate::store::batch::{ExchangeWrite, Outcome, OwnedMintRecord, Together};
use crate::store::postgres::bulk::WRITE;
use crate::store::{Issuance, IssuanceRefusal, MintRecord};
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

/// `writes` made together in one committed transaction of `pool`.
async fn together(pool: &sqlx::PgPool, writes: &[Together<'_>]) -> StoreResult<Vec<Outcome>> {
    let mut tx = pool.begin().await.unwrap();
    let outcomes = WRITE(&mut tx, writes).await?;
    tx.commit().await.unwrap();
    Ok(outcomes)
}

type StoreResult<T> = Result<T, StoreError>;

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
        let batch: Vec<Together<'_>> = writes.iter().map(Together::Exchange).collect();
        let outcomes = together(&pool, &batch).await.unwrap();

        let replays: Vec<bool> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Exchange(Ok(())) => false,
                Outcome::Exchange(Err(StoreError::Replay)) => true,
                other => panic!("{other:?}"),
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

/// A mint record for `tok_id` in `workspace_id` by `session_id`, resolving `intent_id`.
fn record(
    workspace_id: &str,
    session_id: &str,
    intent_id: Option<&str>,
    tok_id: &str,
) -> OwnedMintRecord {
    let tokens = [token(tok_id, workspace_id, Some(session_id))];
    let event = mint_audit(workspace_id, &[tok_id]);
    OwnedMintRecord::from(&MintRecord {
        workspace_id,
        session_id,
        intent_id,
        tokens: &tokens,
        audit: &event,
    })
}

#[tokio::test]
async fn postgres_bulk_mints_record_or_refuse_each_as_one_by_one_with_intents_and_exchanges() {
    with_schema(|store, pool| async move {
        with_workspaces(&*store, &["acme", "globex", "off"]).await;
        for ws in ["acme", "globex"] {
            store.set_workspace_sts_enabled(ws, true, T0).await.unwrap();
        }
        for (ws, ses) in [
            ("acme", "ses-1"),
            ("globex", "ses-2"),
            ("acme", "ses-r"),
            ("off", "ses-o"),
        ] {
            with_session(&*store, ws, ses).await;
        }
        assert!(store.revoke_session("ses-r", at(1)).await.unwrap());
        for (id, ws, ses) in [("int-1", "acme", "ses-1"), ("int-2", "globex", "ses-2")] {
            store
                .record_mint_intent(&intent(id, ws, ses, 0))
                .await
                .unwrap();
        }
        let before = verify(&*store, None).await.unwrap().events;

        let new_intent = intent("int-3", "acme", "ses-1", 1);
        let exchanged = write("jti-9", "ses-9", "globex");
        let records = [
            record("acme", "ses-1", Some("int-1"), "tok-1"),
            record("globex", "ses-2", Some("int-2"), "tok-2"),
            record("acme", "ses-r", None, "tok-3"),
            record("off", "ses-o", None, "tok-4"),
            record("gone", "ses-1", None, "tok-5"),
            record("globex", "ses-1", None, "tok-6"),
            record("acme", "ses-nope", None, "tok-7"),
        ];
        let mut batch = vec![Together::Intent(&new_intent)];
        batch.extend(records.iter().map(Together::Mint));
        batch.push(Together::Exchange(&exchanged));
        let outcomes = together(&pool, &batch).await.unwrap();

        let mints: Vec<Issuance> = outcomes[1..8]
            .iter()
            .map(|o| match o {
                Outcome::Mint(Ok(issuance)) => *issuance,
                other => panic!("{other:?}"),
            })
            .collect();
        use Issuance::{Recorded, Refused};
        use IssuanceRefusal::*;
        assert_eq!(
            mints,
            [
                Recorded,
                Recorded,
                Refused(SessionRevoked),
                Refused(WorkspaceDisabled),
                Refused(WorkspaceMissing),
                Refused(SessionMissing),
                Refused(SessionMissing),
            ]
        );
        assert!(
            matches!(outcomes[0], Outcome::Intent(Ok(()))),
            "{:?}",
            outcomes[0]
        );
        assert!(
            matches!(outcomes[8], Outcome::Exchange(Ok(()))),
            "{:?}",
            outcomes[8]
        );

        assert_eq!(ids(&all_tokens(&*store, "acme").await), ["tok-1"]);
        assert_eq!(ids(&all_tokens(&*store, "globex").await), ["tok-2"]);
        assert!(all_tokens(&*store, "off").await.is_empty());
        // Both recorded mints resolved their intents; the new one waits for its own record.
        let open: Vec<String> = store
            .unresolved_mint_intents(at(1_000))
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(open, ["int-3"]);
        assert_eq!(
            store.unresolved_mint_intents(at(1_000)).await.unwrap()[0],
            new_intent
        );
        assert!(store.get_session("ses-9").await.unwrap().is_some());
        // Two mint events and one exchange event, every chain intact.
        let report = verify(&*store, None).await.unwrap();
        assert!(report.intact(), "{report}");
        assert_eq!(report.events, before + 3);
        assert_eq!(store.outbox_backlog().await.unwrap().pending, before + 3);
    })
    .await;
}

#[tokio::test]
async fn postgres_bulk_writes_fail_whole_when_one_cannot_be_written() {
    with_schema(|store, pool| async move {
        with_workspaces(&*store, &["acme"]).await;
        store
            .set_workspace_sts_enabled("acme", true, T0)
            .await
            .unwrap();
        with_session(&*store, "acme", "ses-1").await;
        // A workspace gone meanwhile, a token id taken, an intent id taken: the caller (the
        // writer) must learn of it and roll back, then make each write on its own to give each
        // its own answer.
        let writes = [
            write("jti-1", "ses-1b", "acme"),
            write("jti-2", "ses-2", "gone"),
        ];
        let batch: Vec<Together<'_>> = writes.iter().map(Together::Exchange).collect();
        let failed = together(&pool, &batch).await;
        assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");

        issue(&*store, "acme", &[token("tok-1", "acme", Some("ses-1"))])
            .await
            .unwrap();
        let records = [
            record("acme", "ses-1", None, "tok-2"),
            record("acme", "ses-1", None, "tok-1"),
        ];
        let batch: Vec<Together<'_>> = records.iter().map(Together::Mint).collect();
        let failed = together(&pool, &batch).await;
        assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");

        store
            .record_mint_intent(&intent("int-1", "acme", "ses-1", 0))
            .await
            .unwrap();
        let intents = [
            intent("int-2", "acme", "ses-1", 0),
            intent("int-1", "acme", "ses-1", 0),
        ];
        let batch: Vec<Together<'_>> = intents.iter().map(Together::Intent).collect();
        let failed = together(&pool, &batch).await;
        assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
        assert_eq!(ids(&all_tokens(&*store, "acme").await), ["tok-1"]);
    })
    .await;
}
