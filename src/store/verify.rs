//! Verification of the whole stored log against its hash chain and head record.

use bson::{doc, Document};
use cryptovault_events::{ChainBreak, ChainBreakKind, ChainVerifier};
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

impl EventStore {
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
