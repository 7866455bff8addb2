//! Verification of the whole stored log against its hash chain and head record, and of the
//! ledger's invariants at every position in the same pass ([`EventStore::verify_ledger`]).

use bson::{doc, Document};
use cryptovault_events::{ChainBreak, ChainBreakKind, ChainVerifier};
use cryptovault_projections::balances::Balances;
use cryptovault_projections::invariants::{InvariantReport, ReportBuilder, Violation};
use serde::Serialize;

use super::document::from_document;
use super::{EventStore, StoreError};

/// The result of [`EventStore::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Events whose chain link was checked and found intact.
    pub events_verified: u64,
    /// Last position according to the head record.
    pub head_position: u64,
    /// The first position where the chain does not hold, if any.
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// The result of [`EventStore::verify_ledger`]: the chain, the final double-entry fold, and
/// the invariants at every position. The shape of `cryptovault verify --json` and
/// `GET /api/audit/verify`.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerVerification {
    /// The chain is unbroken, the final fold balances and no position breaks an invariant.
    pub intact: bool,
    pub chain: VerifyReport,
    /// What the final balances break: an asset not summing to zero, a user balance below zero.
    pub double_entry_problems: Vec<String>,
    /// Every position checked (`projections/src/invariants.rs`): counts and the first position
    /// of each kind, and the first violations listed.
    pub invariants: InvariantReport,
}

impl EventStore {
    /// [`Self::verify_ledger_with`] without a callback.
    pub async fn verify_ledger(
        &self,
        places: impl Fn(&str) -> u32,
    ) -> Result<LedgerVerification, StoreError> {
        self.verify_ledger_with(places, |_| {}).await
    }

    /// Verifies the chain ([`Self::verify_with`]) and, in the same pass over the intact events,
    /// folds the final balances and runs the invariant checker over every position, handing
    /// each violation to `on_violation` as it is found (all of them; the report lists the
    /// first [`cryptovault_projections::invariants::LISTED_VIOLATIONS`]). `places` gives an
    /// asset's decimal places, for writing the balances in the problems found.
    pub async fn verify_ledger_with(
        &self,
        places: impl Fn(&str) -> u32,
        mut on_violation: impl FnMut(&Violation),
    ) -> Result<LedgerVerification, StoreError> {
        let mut balances = Balances::default();
        let mut invariants = ReportBuilder::new();
        let chain = self
            .verify_with(|event| {
                balances.apply(event);
                for violation in invariants.push(event) {
                    on_violation(&violation);
                }
            })
            .await?;
        let double_entry_problems = balances.problems_with_places(places);
        let invariants = invariants.finish();
        Ok(LedgerVerification {
            intact: chain.is_intact() && double_entry_problems.is_empty() && invariants.is_clean(),
            chain,
            double_entry_problems,
            invariants,
        })
    }

    /// Streams the whole log in position order (constant memory), recomputing every hash and
    /// checking every link and the head record. Names the first broken position.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_with(|_| {}).await
    }

    /// [`Self::verify`], also handing every intact event to `visit` in position order (for
    /// checks of other invariants in the same pass).
    pub async fn verify_with(
        &self,
        mut visit: impl FnMut(&cryptovault_events::EventEnvelope),
    ) -> Result<VerifyReport, StoreError> {
        let (head_position, head_hash) = self.head().await?;
        let mut cursor = self
            .events()
            .find(doc! {})
            .sort(doc! { "position": 1 })
            .batch_size(5_000)
            .await?;
        let mut verifier = ChainVerifier::default();
        let mut first_break = None;
        while cursor.advance().await? {
            let raw: Document = cursor.deserialize_current()?;
            let envelope = match from_document(raw) {
                Ok(envelope) => envelope,
                Err(error) => {
                    first_break = Some(ChainBreak {
                        position: verifier.verified() + 1,
                        kind: ChainBreakKind::Unreadable {
                            reason: error.to_string(),
                        },
                    });
                    break;
                }
            };
            if let Err(broken) = verifier.push(&envelope) {
                first_break = Some(broken);
                break;
            }
            visit(&envelope);
        }
        if first_break.is_none() {
            first_break = verifier.finish(head_position, &head_hash).err();
        }
        Ok(VerifyReport {
            events_verified: verifier.verified(),
            head_position,
            first_break,
        })
    }
}
