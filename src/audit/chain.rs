//! The audit log's hash chains: one per workspace, each event linked to the one before it.
//!
//! Every stored row of `audit_events` carries its place in its workspace's chain (`chain_seq`,
//! 1, 2, 3… per workspace), the `hash` of the event before it (`prev_hash`, [`GENESIS_HASH`] for
//! the first) and its own `hash`: SHA-256 over [`canonical_bytes`], which covers every stored
//! column but `hash` itself. Editing, deleting, inserting or reordering a row therefore breaks
//! either the row's own hash or the next row's link, and [`ChainVerifier`] says which.
//!
//! The hash is unkeyed on purpose: anyone holding the database can re-check it, with nothing
//! secret. The flip side is that someone who can write the database can also recompute every
//! hash after the one they edited; only a head hash recorded outside the database (the newest
//! event's `hash` from the audit API) catches that, and a truncated tail. See
//! `docs/architecture.md`, "Audit hash chain", for the definition an auditor re-implements.
//!
//! Events without a workspace (if any) form one chain of their own, under the empty chain key
//! [`chain_key`] gives them; workspace ids are never empty, so it cannot clash with one.

use sha2::{Digest as _, Sha256};

/// `prev_hash` of the first event of a chain: 64 zeros, the hex of no event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Written first into every hashed encoding: a version-1 chain hash cannot be confused with
/// the SHA-256 of anything else, and a later encoding gets a new tag.
pub const CHAIN_HASH_DOMAIN: &[u8] = b"sts-broker audit chain v1";

/// Tag byte of an integer field: `I`, then 8 bytes big-endian two's complement.
const TAG_INTEGER: u8 = b'I';
/// Tag byte of a text field: `S`, then the UTF-8 length as 8 bytes big-endian, then the bytes.
const TAG_TEXT: u8 = b'S';
/// Tag byte of a NULL text field (`workspace_id` of an event without one): `N` and nothing else.
const TAG_NULL: u8 = b'N';

/// The chain an event belongs to: its workspace id, or `""` for an event of no workspace.
pub fn chain_key(workspace_id: Option<&str>) -> &str {
    workspace_id.unwrap_or_default()
}

/// The stored columns of one `audit_events` row that are not part of the chain link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditColumns {
    /// `seq`: the row number, assigned by the database; the audit API's paging cursor.
    pub seq: i64,
    /// `id`: the event's UUIDv7.
    pub id: String,
    /// `time`: epoch milliseconds (UTC).
    pub time: i64,
    /// `workspace_id`, if the event has one.
    pub workspace_id: Option<String>,
    /// `kind`, as stored (`mint`, `exchange`, …).
    pub kind: String,
    /// `outcome`, as stored (`success`, `denied`, `failure`).
    pub outcome: String,
    /// `body`: the event as JSON text, byte for byte as stored.
    pub body: String,
}

/// Where a row sits in its chain: the three chain columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// `chain_seq`: 1 for the first event of the chain, then one more per event.
    pub sequence: i64,
    /// `prev_hash`: the `hash` of the event before, [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// `hash`: [`chain_hash`] of the row.
    pub hash: String,
}

impl ChainLink {
    /// The link of `columns` appended after `head` (the chain's last event: its sequence and
    /// hash), or as the first event when the chain is empty.
    pub fn append(columns: &AuditColumns, head: Option<(i64, &str)>) -> Self {
        let (sequence, prev_hash) = match head {
            Some((sequence, hash)) => (sequence.saturating_add(1), hash.to_owned()),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = chain_hash(columns, sequence, &prev_hash);
        Self {
            sequence,
            prev_hash,
            hash,
        }
    }
}

/// A row as read back for verification: its columns and its chain columns as stored, each of
/// which may be missing (a row never linked, or a column nulled behind the broker's back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// The other columns.
    pub columns: AuditColumns,
    /// `chain_seq`.
    pub sequence: Option<i64>,
    /// `prev_hash`.
    pub prev_hash: Option<String>,
    /// `hash`.
    pub hash: Option<String>,
}

/// The exact bytes [`chain_hash`] hashes (see `docs/architecture.md`, "Audit hash chain"):
/// [`CHAIN_HASH_DOMAIN`], then every stored column but `hash`, in the table's column order
/// (`seq`, `id`, `time`, `workspace_id`, `kind`, `outcome`, `body`, `chain_seq`, `prev_hash`),
/// each tagged and length-prefixed, so no two rows encode alike.
pub fn canonical_bytes(columns: &AuditColumns, sequence: i64, prev_hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHAIN_HASH_DOMAIN.len() + columns.body.len() + 256);
    out.extend_from_slice(CHAIN_HASH_DOMAIN);
    integer(&mut out, columns.seq);
    text(&mut out, &columns.id);
    integer(&mut out, columns.time);
    match &columns.workspace_id {
        Some(ws) => text(&mut out, ws),
        None => out.push(TAG_NULL),
    }
    text(&mut out, &columns.kind);
    text(&mut out, &columns.outcome);
    text(&mut out, &columns.body);
    integer(&mut out, sequence);
    text(&mut out, prev_hash);
    out
}

fn integer(out: &mut Vec<u8>, value: i64) {
    out.push(TAG_INTEGER);
    out.extend_from_slice(&value.to_be_bytes());
}

fn text(out: &mut Vec<u8>, value: &str) {
    out.push(TAG_TEXT);
    // usize is at most 64 bits on every target Rust supports.
    out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// The `hash` of a row at `sequence` after `prev_hash`: lowercase hex SHA-256 of
/// [`canonical_bytes`].
pub fn chain_hash(columns: &AuditColumns, sequence: i64, prev_hash: &str) -> String {
    hex::encode(Sha256::digest(canonical_bytes(
        columns, sequence, prev_hash,
    )))
}

/// What is wrong with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The event is not where the chain says it should be: its sequence skips or repeats one
    /// (an event was deleted, inserted or moved), or its `prev_hash` is not the previous
    /// event's `hash`.
    Link(String),
    /// The event's `hash` is not the hash of its stored columns: a column was edited.
    Content(String),
    /// The event was never linked into its chain (written by a broker that predates the chain,
    /// and no current broker has started since), or its `chain_seq` was removed.
    Unchained,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Link(why) => write!(f, "link: {why}"),
            Self::Content(why) => write!(f, "content: {why}"),
            Self::Unchained => f.write_str(
                "unchained: the event has no place in its chain (written by a broker older \
                 than the chain, or its chain_seq was removed)",
            ),
        }
    }
}

/// The first event of a chain that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The chain: a workspace id, or `""` for events of no workspace.
    pub chain: String,
    /// The event's `id`.
    pub event_id: String,
    /// Its row number (`seq`).
    pub seq: i64,
    /// Its `chain_seq`, if it has one.
    pub sequence: Option<i64>,
    /// What does not match.
    pub mismatch: Mismatch,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chain = if self.chain.is_empty() {
            "(no workspace)"
        } else {
            self.chain.as_str()
        };
        write!(f, "event {} (workspace {chain}, ", self.event_id)?;
        match self.sequence {
            Some(sequence) => write!(f, "sequence {sequence}, ")?,
            None => f.write_str("no sequence, ")?,
        }
        write!(f, "row {}): {}", self.seq, self.mismatch)
    }
}

/// Walks one chain in `chain_seq` order and stops at the first event that does not verify.
#[derive(Debug)]
pub struct ChainVerifier {
    chain: String,
    /// The sequence the next event must have.
    next_sequence: i64,
    /// The hash the next event's `prev_hash` must equal.
    prev_hash: String,
    checked: u64,
}

impl ChainVerifier {
    /// A verifier at the start of `chain`.
    pub fn new(chain: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            next_sequence: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }

    /// How many events verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Check the next row of the chain. The link is checked before the content, so a row in the
    /// wrong place is reported as moved rather than as edited.
    pub fn check(&mut self, row: &ChainRow) -> Result<(), ChainBreak> {
        let broken = |mismatch| ChainBreak {
            chain: self.chain.clone(),
            event_id: row.columns.id.clone(),
            seq: row.columns.seq,
            sequence: row.sequence,
            mismatch,
        };
        let Some(sequence) = row.sequence else {
            return Err(broken(Mismatch::Unchained));
        };
        if sequence != self.next_sequence {
            let why = if sequence > self.next_sequence {
                "is missing: an event was deleted or moved away"
            } else {
                "appears twice: an event was inserted or moved"
            };
            return Err(broken(Mismatch::Link(format!(
                "sequence {} {why} (this event has {sequence})",
                self.next_sequence
            ))));
        }
        let Some(prev_hash) = row.prev_hash.as_deref() else {
            return Err(broken(Mismatch::Link("prev_hash is missing".to_owned())));
        };
        if prev_hash != self.prev_hash {
            let before = if sequence == 1 {
                "the genesis hash".to_owned()
            } else {
                format!("the hash of sequence {}", sequence - 1)
            };
            return Err(broken(Mismatch::Link(format!(
                "prev_hash is not {before}: the event before it was replaced or re-hashed"
            ))));
        }
        let Some(hash) = row.hash.as_deref() else {
            return Err(broken(Mismatch::Content("hash is missing".to_owned())));
        };
        if chain_hash(&row.columns, sequence, prev_hash) != hash {
            return Err(broken(Mismatch::Content(
                "the hash does not match the stored columns: the event was edited".to_owned(),
            )));
        }
        self.next_sequence = sequence.saturating_add(1);
        self.prev_hash = hash.to_owned();
        self.checked += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(seq: i64, body: &str) -> AuditColumns {
        AuditColumns {
            seq,
            id: format!("0190-{seq}"),
            time: 1_777_636_800_000 + seq,
            workspace_id: Some("acme".to_owned()),
            kind: "admin".to_owned(),
            outcome: "success".to_owned(),
            body: body.to_owned(),
        }
    }

    /// A chain of `n` rows, linked as the store links them.
    fn chain(n: i64) -> Vec<ChainRow> {
        let mut rows: Vec<ChainRow> = Vec::new();
        for seq in 1..=n {
            let columns = columns(seq * 10, &format!("{{\"n\":{seq}}}"));
            let head = rows.last().map(|r| {
                (
                    r.sequence.unwrap_or_default(),
                    r.hash.as_deref().unwrap_or_default(),
                )
            });
            let link = ChainLink::append(&columns, head);
            rows.push(ChainRow {
                columns,
                sequence: Some(link.sequence),
                prev_hash: Some(link.prev_hash),
                hash: Some(link.hash),
            });
        }
        rows
    }

    fn verify(rows: &[ChainRow]) -> Result<u64, ChainBreak> {
        let mut verifier = ChainVerifier::new("acme");
        for row in rows {
            verifier.check(row)?;
        }
        Ok(verifier.checked())
    }

    #[test]
    fn the_canonical_encoding_is_fixed_byte_for_byte() {
        let columns = AuditColumns {
            seq: 7,
            id: "e1".to_owned(),
            time: 1000,
            workspace_id: None,
            kind: "mint".to_owned(),
            outcome: "success".to_owned(),
            body: "{}".to_owned(),
        };
        let mut want = b"sts-broker audit chain v1".to_vec();
        want.extend([b'I', 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend([b'S', 0, 0, 0, 0, 0, 0, 0, 2, b'e', b'1']);
        want.extend([b'I', 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        want.push(b'N');
        want.extend([b'S', 0, 0, 0, 0, 0, 0, 0, 4]);
        want.extend(b"mint");
        want.extend([b'S', 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend(b"success");
        want.extend([b'S', 0, 0, 0, 0, 0, 0, 0, 2, b'{', b'}']);
        want.extend([b'I', 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend([b'S', 0, 0, 0, 0, 0, 0, 0, 64]);
        want.extend(GENESIS_HASH.as_bytes());
        assert_eq!(canonical_bytes(&columns, 1, GENESIS_HASH), want);
        // The test vector of docs/architecture.md, for auditors re-implementing the hash.
        assert_eq!(
            chain_hash(&columns, 1, GENESIS_HASH),
            hex::encode(Sha256::digest(&want))
        );
        assert_eq!(
            chain_hash(&columns, 1, GENESIS_HASH),
            "fd4e2ac0b48d27f8361219ad3c4c8ab676798acf9124703968c159a67fd8a9cc"
        );
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        // The same concatenated text split differently, and a NULL against an empty string,
        // must hash differently.
        let mut a = columns(1, "x");
        a.kind = "ab".to_owned();
        a.outcome = "c".to_owned();
        let mut b = a.clone();
        b.kind = "a".to_owned();
        b.outcome = "bc".to_owned();
        assert_ne!(
            chain_hash(&a, 1, GENESIS_HASH),
            chain_hash(&b, 1, GENESIS_HASH)
        );
        let mut none = columns(1, "x");
        none.workspace_id = None;
        let mut empty = none.clone();
        empty.workspace_id = Some(String::new());
        assert_ne!(
            chain_hash(&none, 1, GENESIS_HASH),
            chain_hash(&empty, 1, GENESIS_HASH)
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn every_stored_column_is_covered() {
        type Edit = fn(&mut ChainRow);
        let edits: Vec<(&str, Edit)> = vec![
            ("seq", |r| r.columns.seq += 1),
            ("id", |r| r.columns.id.push('x')),
            ("time", |r| r.columns.time += 1),
            ("workspace_id", |r| r.columns.workspace_id = None),
            ("kind", |r| r.columns.kind = "mint".to_owned()),
            ("outcome", |r| r.columns.outcome = "denied".to_owned()),
            ("body", |r| r.columns.body.push(' ')),
            ("hash", |r| r.hash = Some(GENESIS_HASH.to_owned())),
        ];
        for (column, edit) in edits {
            let mut rows = chain(4);
            edit(&mut rows[2]);
            let broken = verify(&rows).unwrap_err();
            assert_eq!(broken.event_id, rows[2].columns.id, "{column}");
            assert!(
                matches!(broken.mismatch, Mismatch::Content(_)),
                "{column}: {broken}"
            );
        }
    }

    #[test]
    fn a_deleted_inserted_moved_or_rehashed_event_breaks_a_link() {
        let rows = chain(4);

        let mut deleted = rows.clone();
        deleted.remove(1);
        let broken = verify(&deleted).unwrap_err();
        assert_eq!(broken.event_id, rows[2].columns.id);
        assert!(matches!(broken.mismatch, Mismatch::Link(_)), "{broken}");

        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        (swapped[1].sequence, swapped[2].sequence) = (Some(2), Some(3));
        let broken = verify(&swapped).unwrap_err();
        assert_eq!(broken.event_id, rows[2].columns.id);
        assert!(matches!(broken.mismatch, Mismatch::Link(_)), "{broken}");

        // An edit whose author also recomputed the row's own hash: the next link breaks.
        let mut rehashed = rows.clone();
        rehashed[1].columns.body = "{\"n\":99}".to_owned();
        let prev = rehashed[1].prev_hash.clone().unwrap_or_default();
        rehashed[1].hash = Some(chain_hash(&rehashed[1].columns, 2, &prev));
        let broken = verify(&rehashed).unwrap_err();
        assert_eq!(broken.event_id, rows[2].columns.id);
        assert!(matches!(broken.mismatch, Mismatch::Link(_)), "{broken}");

        let mut unchained = rows;
        unchained[0].sequence = None;
        let broken = verify(&unchained).unwrap_err();
        assert_eq!(broken.mismatch, Mismatch::Unchained);
    }

    #[test]
    fn a_break_names_the_event_its_workspace_and_what_mismatched() {
        let broken = ChainBreak {
            chain: String::new(),
            event_id: "0190-1".to_owned(),
            seq: 17,
            sequence: Some(3),
            mismatch: Mismatch::Content("the hash does not match".to_owned()),
        };
        assert_eq!(
            broken.to_string(),
            "event 0190-1 (workspace (no workspace), sequence 3, row 17): content: the hash \
             does not match"
        );
    }
}
