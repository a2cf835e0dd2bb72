//! PostgreSQL's way to write a batch's exchanges, mint intents and mint records together (a
//! [`BulkWrite`]): every replay key in one statement, every session in one, every intent, every
//! token row, every audit row and its export in one each, the rows passed as one array per
//! column (`unnest`). Written one by one, an exchange costs nine round trips on the writer's one
//! connection (savepoint, replay key, session, chain lock, audit insert, outbox, chain head, link,
//! release) and a mint sixteen (its intent three, its record thirteen), and those round trips,
//! not the database's work, bounded the rates; together, a batch of any size costs about as many
//! as one mint did.
//!
//! The rows are the ones the one-by-one writes (`SharedSql::write_exchange`,
//! `insert_mint_intent`, `PgStore::record_mint`) leave: the same replay rule (the first use wins,
//! in batch order, and any use already stored refuses), the same refusals of a mint whose
//! workspace or session changed meanwhile (under the same row locks), and audit rows linked in
//! their chains under the same lock. Only the audit row goes in already linked, as on SQLite's
//! writer thread: `seq` is drawn from the table's sequence after the chain's lock is held, so the
//! hash can cover it and, within a chain, `seq` order is still append order (which the export
//! relies on). Anything unexpected (a workspace deleted meanwhile, a clashing id, a corrupt
//! chain head) fails the whole call and the writer falls back to the one-by-one writes, which
//! then say precisely what went wrong.

use super::super::batch::{BulkWrite, ExchangeWrite, Outcome, Together};
use super::super::codec::{to_json, to_ms};
use super::super::rows::{AuditAppend, IssuedTokenRow, SessionRow};
use super::super::{Issuance, IssuanceRefusal, MintIntent, MintRecord, StoreError, StoreResult};
use crate::audit::chain::ChainLink;
use sqlx::postgres::PgConnection;
use std::collections::{HashMap, HashSet};

/// One column of `rows`, as the array an `unnest` parameter takes.
fn column<'a, R, T>(rows: &'a [R], field: impl FnMut(&'a R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

/// The [`BulkWrite`] of the PostgreSQL writer.
pub(in crate::store) const WRITE: BulkWrite<sqlx::Postgres> =
    |conn, writes| Box::pin(write(conn, writes));

async fn write(conn: &mut PgConnection, writes: &[Together<'_>]) -> StoreResult<Vec<Outcome>> {
    let (mut exchanges, mut intents, mut mints) = (Vec::new(), Vec::new(), Vec::new());
    for (at, write) in writes.iter().enumerate() {
        match *write {
            Together::Exchange(exchange) => exchanges.push((at, exchange)),
            Together::Intent(intent) => intents.push(intent),
            Together::Mint(record) => mints.push((at, record.borrowed())),
        }
    }
    // Every write's outcome is known before the audit append; the appends of every kind go in
    // together, so that the batch locks its chains once, in key order.
    let mut outcomes: Vec<Option<Outcome>> = writes
        .iter()
        .map(|write| match write {
            Together::Intent(_) => Some(Outcome::Intent(Ok(()))),
            Together::Exchange(_) | Together::Mint(_) => None,
        })
        .collect();
    let mut appends = Vec::new();
    if !exchanges.is_empty() {
        let batch: Vec<&ExchangeWrite> = exchanges.iter().map(|(_, e)| *e).collect();
        let fresh = replay_keys(conn, &batch).await?;
        let mut accepted = Vec::with_capacity(batch.len());
        for ((at, exchange), fresh) in exchanges.iter().zip(fresh) {
            outcomes[*at] = Some(Outcome::Exchange(if fresh {
                accepted.push(*exchange);
                Ok(())
            } else {
                Err(StoreError::Replay)
            }));
        }
        if !accepted.is_empty() {
            sessions(conn, &accepted).await?;
            for exchange in accepted {
                appends.push(AuditAppend::encode(&exchange.audit)?);
            }
        }
    }
    if !intents.is_empty() {
        insert_intents(conn, &intents).await?;
    }
    if !mints.is_empty() {
        let records: Vec<&MintRecord<'_>> = mints.iter().map(|(_, r)| r).collect();
        let refusals = mint_refusals(conn, &records).await?;
        let mut recorded = Vec::with_capacity(records.len());
        for ((at, record), refusal) in mints.iter().zip(refusals) {
            outcomes[*at] = Some(Outcome::Mint(Ok(match refusal {
                Some(refusal) => Issuance::Refused(refusal),
                None => {
                    recorded.push(record);
                    Issuance::Recorded
                }
            })));
        }
        if !recorded.is_empty() {
            record_mints(conn, &recorded).await?;
            for record in recorded {
                appends.push(AuditAppend::encode(record.audit)?);
            }
        }
    }
    if !appends.is_empty() {
        audit(conn, appends).await?;
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.ok_or_else(|| StoreError::Corrupt("a write without outcome".to_owned()))
        })
        .collect()
}

/// Store the replay keys; for each exchange, whether its key was new. A key met earlier in the
/// batch is not sent again (its first use wins, as one by one); one already stored, or stored
/// meanwhile by another replica (the insert waits for that transaction), is not inserted.
async fn replay_keys(
    conn: &mut PgConnection,
    exchanges: &[&ExchangeWrite],
) -> StoreResult<Vec<bool>> {
    let mut first = HashSet::with_capacity(exchanges.len());
    let mut sent = Vec::with_capacity(exchanges.len());
    let firsts: Vec<bool> = exchanges
        .iter()
        .map(|exchange| {
            let jti = &exchange.jti;
            let is_first = first.insert((jti.issuer.as_str(), jti.jti.as_str()));
            if is_first {
                sent.push((jti.issuer.as_str(), jti.jti.as_str(), to_ms(jti.expires_at)));
            }
            is_first
        })
        .collect();
    // Inserted in key order: two replicas' batches holding the same keys (a token replayed at
    // both at once) then wait for each other in one direction, never in a cycle that PostgreSQL
    // would break only after its deadlock timeout.
    sent.sort_unstable();
    let inserted: Vec<(String, String)> = sqlx::query_as(
        r#"insert into oidc_replay_keys (issuer, jti, expires_at)
           select issuer, jti, expires_at
           from unnest($1::text[], $2::text[], $3::bigint[]) with ordinality
               as k(issuer, jti, expires_at, position)
           order by position
           on conflict do nothing
           returning issuer, jti"#,
    )
    .bind(column(&sent, |k| k.0))
    .bind(column(&sent, |k| k.1))
    .bind(column(&sent, |k| k.2))
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<(&str, &str)> = inserted
        .iter()
        .map(|(issuer, jti)| (issuer.as_str(), jti.as_str()))
        .collect();
    Ok(exchanges
        .iter()
        .zip(firsts)
        .map(|(exchange, is_first)| {
            is_first
                && inserted.contains(&(exchange.jti.issuer.as_str(), exchange.jti.jti.as_str()))
        })
        .collect())
}

/// Insert the accepted exchanges' sessions.
async fn sessions(conn: &mut PgConnection, accepted: &[&ExchangeWrite]) -> StoreResult<()> {
    let rows = accepted
        .iter()
        .map(|exchange| SessionRow::encode(&exchange.session))
        .collect::<StoreResult<Vec<_>>>()?;
    sqlx::query(
        r#"insert into sessions
           (id, workspace_id, issuer, subject, claims, created_at, expires_at, revoked_at)
           select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::bigint[], $7::bigint[], $8::bigint[])"#,
    )
    .bind(column(&rows, |r| r.id.as_str()))
    .bind(column(&rows, |r| r.workspace_id.as_str()))
    .bind(column(&rows, |r| r.issuer.as_str()))
    .bind(column(&rows, |r| r.subject.as_str()))
    .bind(column(&rows, |r| r.claims.as_str()))
    .bind(column(&rows, |r| r.created_at))
    .bind(column(&rows, |r| r.expires_at))
    .bind(column(&rows, |r| r.revoked_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Insert the intents, unresolved.
async fn insert_intents(conn: &mut PgConnection, intents: &[&MintIntent]) -> StoreResult<()> {
    let mut actors = Vec::with_capacity(intents.len());
    let mut planned = Vec::with_capacity(intents.len());
    for intent in intents {
        actors.push(to_json(&intent.actor, "intent actor")?);
        planned.push(to_json(&intent.planned, "intent planned tokens")?);
    }
    sqlx::query(
        r#"insert into mint_intents
           (id, workspace_id, session_id, request_id, policy_name, policy_version, actor,
            planned, created_at)
           select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::bigint[], $7::text[], $8::text[], $9::bigint[])"#,
    )
    .bind(column(intents, |i| i.id.as_str()))
    .bind(column(intents, |i| i.workspace_id.as_str()))
    .bind(column(intents, |i| i.session_id.as_str()))
    .bind(column(intents, |i| i.request_id.as_deref()))
    .bind(column(intents, |i| i.policy_name.as_str()))
    .bind(column(intents, |i| i.policy_version))
    .bind(actors)
    .bind(planned)
    .bind(column(intents, |i| to_ms(i.created_at)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Why each mint may no longer be recorded, if it may not: its workspace and session rows,
/// locked `for share` (in id order) until the transaction ends, as `PgStore::record_mint` locks
/// them, so that a deletion, a disabling or a logout committed before is seen and one that
/// comes later waits for this record.
async fn mint_refusals(
    conn: &mut PgConnection,
    records: &[&MintRecord<'_>],
) -> StoreResult<Vec<Option<IssuanceRefusal>>> {
    let workspaces: HashMap<String, bool> = sqlx::query_as::<_, (String, bool)>(
        r#"select id, sts_enabled from workspaces where id = any($1) order by id for share"#,
    )
    .bind(column(records, |r| r.workspace_id))
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let sessions: HashMap<String, (String, Option<i64>)> =
        sqlx::query_as::<_, (String, String, Option<i64>)>(
            r#"select id, workspace_id, revoked_at from sessions where id = any($1)
               order by id for share"#,
        )
        .bind(column(records, |r| r.session_id))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(id, workspace_id, revoked_at)| (id, (workspace_id, revoked_at)))
        .collect();
    Ok(records
        .iter()
        .map(|record| {
            IssuanceRefusal::by_workspace(workspaces.get(record.workspace_id).copied()).or_else(
                || {
                    let session = sessions.get(record.session_id);
                    IssuanceRefusal::by_session(
                        record.workspace_id,
                        session.map(|(owner, revoked)| (owner.as_str(), revoked.is_some())),
                    )
                },
            )
        })
        .collect())
}

/// The recorded mints' writes but their audit events: their intents resolved (deleted, whether
/// or not a sweep called them orphaned meanwhile) and their token rows.
async fn record_mints(conn: &mut PgConnection, records: &[&MintRecord<'_>]) -> StoreResult<()> {
    let intents: Vec<&str> = records.iter().filter_map(|r| r.intent_id).collect();
    if !intents.is_empty() {
        sqlx::query(r#"delete from mint_intents where id = any($1)"#)
            .bind(&intents)
            .execute(&mut *conn)
            .await?;
    }
    let rows = records
        .iter()
        .flat_map(|record| record.tokens)
        .map(IssuedTokenRow::encode)
        .collect::<StoreResult<Vec<_>>>()?;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"insert into issued_tokens
           (id, workspace_id, session_id, installation_id, owner, host, repositories,
            permissions, fingerprint, sealed_token, policy_name, policy_version,
            created_at, expires_at, revoked_at)
           select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                $11::text[], $12::bigint[], $13::bigint[], $14::bigint[],
                                $15::bigint[])"#,
    )
    .bind(column(&rows, |r| r.id.as_str()))
    .bind(column(&rows, |r| r.workspace_id.as_str()))
    .bind(column(&rows, |r| r.session_id.as_deref()))
    .bind(column(&rows, |r| r.installation_id))
    .bind(column(&rows, |r| r.owner.as_str()))
    .bind(column(&rows, |r| r.host.as_str()))
    .bind(column(&rows, |r| r.repositories.as_deref()))
    .bind(column(&rows, |r| r.permissions.as_str()))
    .bind(column(&rows, |r| r.fingerprint.as_str()))
    .bind(column(&rows, |r| r.sealed_token.as_deref()))
    .bind(column(&rows, |r| r.policy_name.as_str()))
    .bind(column(&rows, |r| r.policy_version))
    .bind(column(&rows, |r| r.created_at))
    .bind(column(&rows, |r| r.expires_at))
    .bind(column(&rows, |r| r.revoked_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Append the events, in order, to their chains: lock the chains (in key order, so that two
/// writers locking several never wait for each other in a cycle), read their heads, draw the
/// rows' `seq`, link each row after the one before it in its chain, insert the rows and queue
/// their export.
async fn audit(conn: &mut PgConnection, mut appends: Vec<AuditAppend>) -> StoreResult<()> {
    let mut chains: Vec<&str> = appends.iter().map(|a| a.chain.as_str()).collect();
    chains.sort_unstable();
    chains.dedup();
    sqlx::query(
        r#"select pg_advisory_xact_lock($1, hashtext(chain))
           from (select chain from unnest($2::text[]) as c(chain) order by chain) as ordered"#,
    )
    .bind(super::AUDIT_CHAIN_LOCK_CLASS)
    .bind(&chains)
    .execute(&mut *conn)
    .await?;
    let heads: Vec<(String, Option<i64>, Option<String>)> = sqlx::query_as(
        r#"select c.chain, h.chain_seq, h.hash
           from unnest($1::text[]) as c(chain)
           left join lateral (
               select chain_seq, hash from audit_events
               where coalesce(workspace_id, '') = c.chain and chain_seq is not null
               order by chain_seq desc
               limit 1
           ) as h on true"#,
    )
    .bind(&chains)
    .fetch_all(&mut *conn)
    .await?;
    let mut seqs: Vec<i64> = sqlx::query_scalar(
        r#"select nextval(pg_get_serial_sequence('audit_events', 'seq'))
           from generate_series(1, $1)"#,
    )
    .bind(i64::try_from(appends.len()).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    if seqs.len() != appends.len() {
        return Err(StoreError::Corrupt(
            "audit sequence: too few values".to_owned(),
        ));
    }
    seqs.sort_unstable();
    let mut head: HashMap<String, (i64, String)> = HashMap::with_capacity(heads.len());
    for (chain, sequence, hash) in heads {
        match (sequence, hash) {
            (Some(sequence), Some(hash)) => {
                head.insert(chain, (sequence, hash));
            }
            (None, _) => {}
            // Linking to a head without a hash would bless whatever was done to it.
            (Some(_), None) => {
                return Err(StoreError::Corrupt(format!(
                    "audit chain {chain:?}: the head event has no hash"
                )))
            }
        }
    }
    let mut links = Vec::with_capacity(appends.len());
    for (append, seq) in appends.iter_mut().zip(seqs) {
        append.columns.seq = seq;
        let before = head.get(&append.chain).map(|(s, h)| (*s, h.as_str()));
        let link = ChainLink::append(&append.columns, before);
        head.insert(append.chain.clone(), (link.sequence, link.hash.clone()));
        links.push(link);
    }
    sqlx::query(
        r#"insert into audit_events
           (seq, id, time, workspace_id, kind, outcome, body, chain_seq, prev_hash, hash)
           select * from unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[])"#,
    )
    .bind(column(&appends, |a| a.columns.seq))
    .bind(column(&appends, |a| a.columns.id.as_str()))
    .bind(column(&appends, |a| a.columns.time))
    .bind(column(&appends, |a| a.columns.workspace_id.as_deref()))
    .bind(column(&appends, |a| a.columns.kind.as_str()))
    .bind(column(&appends, |a| a.columns.outcome.as_str()))
    .bind(column(&appends, |a| a.columns.body.as_str()))
    .bind(column(&links, |l| l.sequence))
    .bind(column(&links, |l| l.prev_hash.as_str()))
    .bind(column(&links, |l| l.hash.as_str()))
    .execute(&mut *conn)
    .await?;
    // Audit export (`outbox.rs`): queued in this same transaction, so exported iff stored.
    sqlx::query(
        r#"insert into audit_outbox (seq, chain, created_at, next_attempt_at)
           select seq, chain, at, at from unnest($1::bigint[], $2::text[], $3::bigint[])
               as queued(seq, chain, at)"#,
    )
    .bind(column(&appends, |a| a.columns.seq))
    .bind(column(&appends, |a| a.chain.as_str()))
    .bind(column(&appends, |a| a.columns.time))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
