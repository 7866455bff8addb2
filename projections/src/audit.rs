//! The audit fold: one audit row per operation recorded in the log — every write a user,
//! admin or the CLI made and every login attempt, with who, from where, through which request
//! and the outcome.
//!
//! An operation that appends several events (signup: `EmailClaimed` + `UserRegistered`; a
//! transfer: `TransferSent` + `TransferReceived`; a withdrawal: `WithdrawalRequested` +
//! `WithdrawalOpened`) is recorded once, by its main event. Requests the service refused
//! (validation errors, insufficient funds) write nothing, by the ledger's rule that a refused
//! command changes nothing, so they appear in the request logs, not here; refused logins are
//! events (`LoginFailed`) and so are audited.
//!
//! Unlike the other folds this one is not a `match` over an event family: it audits every
//! event of the log, of any type (also types it does not know), from the envelope's metadata
//! and a few common payload fields.

use chrono::{DateTime, Utc};
use cryptovault_events::identity::{EmailClaimed, LoginFailed};
use cryptovault_events::ledger::{TransferReceived, WithdrawalOpened};
use cryptovault_events::personal::is_sealed;
use cryptovault_events::{DomainEvent, EventEnvelope};

/// Event types that only accompany another event of the same operation.
const COMPANION_EVENTS: [&str; 3] = [
    EmailClaimed::EVENT_TYPE,
    TransferReceived::EVENT_TYPE,
    WithdrawalOpened::EVENT_TYPE,
];

/// One audited operation.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub position: u64,
    pub occurred_at: DateTime<Utc>,
    /// The event type, e.g. `TransferSent`, `LoginFailed`.
    pub action: String,
    pub stream_id: String,
    /// User id of the acting principal, `cli`, or for refused logins the attempted email.
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// `success`, or `failure` for refused logins.
    pub outcome: &'static str,
    /// Why a login was refused.
    pub reason: Option<String>,
}

fn payload_str(event: &EventEnvelope, field: &str) -> Option<String> {
    event.payload.get(field)?.as_str().map(str::to_owned)
}

/// The audit row for `event`, or `None` for a companion event.
pub fn audit_row(event: &EventEnvelope) -> Option<AuditRow> {
    if COMPANION_EVENTS.contains(&event.event_type.as_str()) {
        return None;
    }
    let failed = event.event_type == LoginFailed::EVENT_TYPE;
    // A sealed address (schema version 2) is no use as an actor and is not copied.
    let attempted = || payload_str(event, "email").filter(|e| !is_sealed(e));
    let actor = event.metadata.actor.clone().or_else(|| {
        if failed {
            payload_str(event, "user_id").or_else(attempted)
        } else {
            payload_str(event, "user_id")
        }
    });
    Some(AuditRow {
        position: event.position,
        occurred_at: event.occurred_at,
        action: event.event_type.clone(),
        stream_id: event.stream_id.clone(),
        actor,
        ip: event
            .metadata
            .ip
            .clone()
            .or_else(|| payload_str(event, "ip")),
        user_agent: event
            .metadata
            .user_agent
            .clone()
            .or_else(|| payload_str(event, "user_agent")),
        request_id: event.metadata.request_id.clone(),
        outcome: if failed { "failure" } else { "success" },
        reason: if failed {
            payload_str(event, "reason")
        } else {
            None
        },
    })
}
