//! The one error type of the HTTP layer and its mapping to status codes and the error shape
//! `{"error":{"code","message","request_id"}}` (PRODUCT.md §4). Each variant documents its
//! status and code. Internal causes are logged, never shown to clients.
//!
//! Failures of MongoDB that pass (unreachable, an election, a dropped connection, a lock or
//! write conflict, an aborted transaction) are 503 `unavailable` with `Retry-After`, on every
//! route: every cause that reaches [`ApiError`] through `anyhow` (the ledger, identity, the
//! handlers' own reads) goes through `From<anyhow::Error>`, which walks its source chain with
//! [`error_chain_is_unavailable`]. Only what is left is 500 `internal_error`: a bug.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::request_context::current_request_id;
use super::views::{ErrorBody, ErrorDetail};
use crate::identity::domain::InvalidInput;
use crate::identity::IdentityError;
use crate::ledger::account::Refusal;
use crate::ledger::service::LedgerError;
use crate::store::error::error_chain_is_unavailable;
use crate::store::StoreError;

/// `Retry-After` (seconds) of a 503 `unavailable`: long enough for a dropped connection or a
/// conflict to pass, short against an election (about 10 s), which a client simply retries.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;
/// `Retry-After` (seconds) of a 503 `projection_lag`.
pub const PROJECTION_LAG_RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_json`: the body is not JSON, or not an object of the expected shape.
    #[error("{0}")]
    MalformedJson(String),
    /// 422 `validation_error`: a field breaks a rule; the message starts with the field name.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// 413 `payload_too_large`.
    #[error("request body exceeds the size limit")]
    PayloadTooLarge,
    /// 401 `unauthorized`: missing, invalid, expired or revoked credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 401 `totp_required`: the password was right but 2FA is on and no code was sent.
    #[error("{0}")]
    TotpRequired(String),
    /// 401 `invalid_totp`.
    #[error("{0}")]
    InvalidTotp(String),
    /// 403 `forbidden`: authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `csrf_failed`: cookie-authenticated unsafe request without a matching CSRF token.
    #[error("{0}")]
    CsrfFailed(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: the request clashes with existing state (an email already registered).
    #[error("{0}")]
    Conflict(String),
    /// 422 `insufficient_funds`: the account's available balance is too small.
    #[error("{0}")]
    InsufficientFunds(String),
    /// 422 `balance_limit`: a balance the command would produce (the account's, or a
    /// system account's) cannot be held exactly (beyond ±1.7·10²⁰ of the asset); nothing was
    /// written. The message starts with the field (`amount`).
    #[error("{0}")]
    BalanceLimit(String),
    /// 409 `idempotency_conflict`: the Idempotency-Key was used with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// 503 `projection_lag`, with `Retry-After`: a read waited for `min_position` longer than
    /// allowed.
    #[error("the read model has not reached position {0} yet; retry shortly")]
    ProjectionLag(u64),
    /// 409 `invalid_state`: the operation makes no sense in the current state.
    #[error("{0}")]
    InvalidState(String),
    /// 503 `checkpoints_disabled`: no `CHECKPOINT_SIGNING_KEY` is configured, so this service
    /// keeps no Merkle tree and signs nothing.
    #[error("this service signs no checkpoints (CHECKPOINT_SIGNING_KEY is not configured)")]
    CheckpointsDisabled,
    /// 503 `checkpoint_pending`, with `Retry-After`: the tree or the checkpoints have not
    /// reached what was asked for yet (a rebuild in progress, or a refused log).
    #[error("{0}")]
    CheckpointPending(String),
    /// 423 `account_locked`, with `Retry-After`.
    #[error("{message}")]
    AccountLocked {
        message: String,
        retry_after_secs: u64,
    },
    /// 429 `rate_limited`, with `Retry-After`.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 503 `unavailable`, with `Retry-After`: MongoDB does not answer or fails in a way that
    /// passes (see the module docs). Built from a cause by `From<anyhow::Error>`.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal_error`: a bug. The cause is logged with the request id, the client sees
    /// neither. Built only by `From<anyhow::Error>`, which sorts out the unavailable causes.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::TotpRequired(_) => (StatusCode::UNAUTHORIZED, "totp_required"),
            Self::InvalidTotp(_) => (StatusCode::UNAUTHORIZED, "invalid_totp"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::CsrfFailed(_) => (StatusCode::FORBIDDEN, "csrf_failed"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::InvalidState(_) => (StatusCode::CONFLICT, "invalid_state"),
            Self::InsufficientFunds(_) => (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"),
            Self::BalanceLimit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "balance_limit"),
            Self::IdempotencyConflict => (StatusCode::CONFLICT, "idempotency_conflict"),
            Self::ProjectionLag(_) => (StatusCode::SERVICE_UNAVAILABLE, "projection_lag"),
            Self::CheckpointsDisabled => (StatusCode::SERVICE_UNAVAILABLE, "checkpoints_disabled"),
            Self::CheckpointPending(_) => (StatusCode::SERVICE_UNAVAILABLE, "checkpoint_pending"),
            Self::AccountLocked { .. } => (StatusCode::LOCKED, "account_locked"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    pub fn unauthorized() -> Self {
        Self::Unauthorized("authentication required".into())
    }
}

impl From<anyhow::Error> for ApiError {
    /// The one place a failure cause becomes a status: 503 `unavailable` when anything in its
    /// chain is a MongoDB or store failure that passes, else 500 `internal_error`.
    fn from(cause: anyhow::Error) -> Self {
        if error_chain_is_unavailable(cause.as_ref()) {
            tracing::warn!(error = %format!("{cause:#}"), "mongodb unavailable; answering 503");
            Self::Unavailable(
                "the database is not available right now; retry shortly (a write retried with \
                 the same Idempotency-Key is applied at most once)"
                    .into(),
            )
        } else {
            Self::Internal(cause)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl From<crate::statement::SumError> for ApiError {
    fn from(e: crate::statement::SumError) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl From<crate::notary::NotaryError> for ApiError {
    fn from(e: crate::notary::NotaryError) -> Self {
        use crate::notary::NotaryError;
        match e {
            NotaryError::Store(e) => e.into(),
            NotaryError::Behind { .. } => Self::CheckpointPending(format!("{e}; retry shortly")),
            // The log does not hold: nothing new is signed until an operator acts (logged).
            // The reason (positions, hashes) is for auditors: `GET /api/audit/tree`, the logs.
            NotaryError::Refused(_) => Self::CheckpointPending(
                "no checkpoint covers this yet: the notary refuses to sign (auditors see why at \
                 GET /api/audit/tree)"
                    .into(),
            ),
            NotaryError::BadRange(message) => Self::Validation {
                field: "size".into(),
                message,
            },
            NotaryError::MissingSubtree(_) => anyhow::Error::from(e).into(),
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::Validation {
            field: e.field.to_owned(),
            message: e.message,
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let message = e.to_string();
        match e {
            IdentityError::Invalid(invalid) => invalid.into(),
            IdentityError::EmailTaken => Self::Conflict(message),
            IdentityError::InvalidCredentials
            | IdentityError::InvalidRefresh
            | IdentityError::RefreshReused => Self::Unauthorized(message),
            IdentityError::TotpRequired => Self::TotpRequired(message),
            IdentityError::InvalidTotp => Self::InvalidTotp(message),
            IdentityError::Locked { retry_after_secs } => Self::AccountLocked {
                message,
                retry_after_secs,
            },
            IdentityError::InvalidState(_) => Self::InvalidState(message),
            IdentityError::UnknownUser => Self::NotFound(message),
            IdentityError::Internal(cause) => cause.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        let message = e.to_string();
        match e {
            LedgerError::Refused(Refusal::InsufficientFunds { .. }) => {
                Self::InsufficientFunds(message)
            }
            LedgerError::Refused(Refusal::BalanceLimit { .. }) => Self::BalanceLimit(message),
            LedgerError::Refused(Refusal::InvalidTransition { .. }) => Self::InvalidState(message),
            LedgerError::Refused(Refusal::UnknownWithdrawal(_))
            | LedgerError::UnknownWithdrawal(_) => Self::NotFound(message),
            LedgerError::Refused(Refusal::OwnWithdrawal { .. } | Refusal::OwnDeposit) => {
                Self::Forbidden(message)
            }
            LedgerError::Refused(Refusal::SelfTransfer) => Self::Validation {
                field: "to_email".into(),
                message,
            },
            LedgerError::Internal(cause) => cause.into(),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "internal error; quote the request id when reporting it".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = error_response(status, code, &message);
        let retry_after = match self {
            Self::AccountLocked {
                retry_after_secs, ..
            }
            | Self::RateLimited { retry_after_secs } => Some(retry_after_secs),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            Self::ProjectionLag(_) | Self::CheckpointPending(_) => {
                Some(PROJECTION_LAG_RETRY_AFTER_SECS)
            }
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// Builds an error response in the shared shape; used by [`ApiError`] and by middleware.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(error_body(code, message))).into_response()
}

/// The body of an error response.
pub fn error_body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: current_request_id(),
        },
    }
}
