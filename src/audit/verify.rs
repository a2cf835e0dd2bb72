//! `sts-broker audit verify`: recompute every audit hash chain from the database and name the
//! first event of each chain whose content or link does not match.

use super::chain::{ChainBreak, ChainVerifier};
use crate::store::{Store, StoreResult};

/// Exit status of `audit verify` when every chain is intact.
pub const EXIT_INTACT: u8 = 0;
/// Exit status when some event's content or link does not match.
pub const EXIT_BROKEN: u8 = 1;
/// Exit status when nothing could be verified: bad usage, configuration or database.
pub const EXIT_CANNOT_VERIFY: u8 = 2;

/// Rows read per query while walking a chain: memory stays bounded whatever the log's size.
pub const VERIFY_PAGE_ROWS: u32 = 1000;

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chains walked.
    pub chains: u64,
    /// Events that verified (in a broken chain, those before its first break).
    pub events: u64,
    /// The first break of each broken chain, chains in bytewise key order.
    pub breaks: Vec<ChainBreak>,
}

impl VerifyReport {
    /// No chain is broken.
    pub fn intact(&self) -> bool {
        self.breaks.is_empty()
    }

    /// [`EXIT_INTACT`] or [`EXIT_BROKEN`].
    pub fn exit_code(&self) -> u8 {
        if self.intact() {
            EXIT_INTACT
        } else {
            EXIT_BROKEN
        }
    }
}

impl std::fmt::Display for VerifyReport {
    /// One line per broken chain (its first bad event), then a summary line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for broken in &self.breaks {
            writeln!(f, "MISMATCH {broken}")?;
        }
        let events = count(self.events, "event", "events");
        let chains = count(self.chains, "chain", "chains");
        if self.intact() {
            writeln!(f, "audit log intact: {events} in {chains} verified")
        } else {
            writeln!(
                f,
                "audit log NOT intact: {} of {chains} broken; {events} verified before the breaks",
                self.breaks.len()
            )
        }
    }
}

/// `1 event`, `2 events`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Verify the chain of `workspace` (`Some("")` for events of no workspace), or every chain.
pub async fn verify(store: &dyn Store, workspace: Option<&str>) -> StoreResult<VerifyReport> {
    let chains = match workspace {
        Some(ws) => vec![ws.to_owned()],
        None => store.audit_chains().await?,
    };
    let mut report = VerifyReport::default();
    for chain in &chains {
        let (verified, broken) = verify_chain(store, chain).await?;
        report.chains += 1;
        report.events += verified;
        report.breaks.extend(broken);
    }
    Ok(report)
}

/// Open the database at `url` without changing it ([`crate::store::open_existing`]) and
/// [`verify`] it.
pub async fn verify_database(url: &str, workspace: Option<&str>) -> StoreResult<VerifyReport> {
    let store = crate::store::open_existing(url).await?;
    verify(store.as_ref(), workspace).await
}

/// Walk one chain in order, page by page: how many events verified, and the first break.
async fn verify_chain(store: &dyn Store, chain: &str) -> StoreResult<(u64, Option<ChainBreak>)> {
    let mut verifier = ChainVerifier::new(chain);
    let mut after = None;
    loop {
        let page = store
            .audit_chain_page(chain, after, VERIFY_PAGE_ROWS)
            .await?;
        for row in &page {
            if let Err(broken) = verifier.check(row) {
                return Ok((verifier.checked(), Some(broken)));
            }
        }
        // A page holds linked rows only, so the last one has a sequence.
        let Some((sequence, seq)) = page
            .last()
            .and_then(|last| Some((last.sequence?, last.columns.seq)))
        else {
            break;
        };
        if page.len() < VERIFY_PAGE_ROWS as usize {
            break;
        }
        after = Some((sequence, seq));
    }
    // Every linked row verified; a row never linked is a break of its own.
    let unchained = store.unchained_audit_rows(chain, 1).await?;
    let broken = unchained.first().and_then(|row| verifier.check(row).err());
    Ok((verifier.checked(), broken))
}
