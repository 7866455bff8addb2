//! Deposits that are not self-service (`DEPOSITS_MODE`, see `config::DepositsMode`):
//!
//! - `POST /api/admin/deposits`: an admin books a payment to a user's account, with the
//!   payment's reference; never to their own account (four eyes, `Refusal::OwnDeposit`).
//! - `POST /api/webhooks/deposits`: the payment provider's webhook. The provider signs
//!   `"{timestamp}.{raw body}"` with HMAC-SHA256 under `DEPOSIT_WEBHOOK_SECRET` and sends
//!   `X-Webhook-Timestamp: <unix seconds>` and `X-Webhook-Signature: v1=<hex>`. A signature is
//!   checked (constant time) before the body is parsed; a timestamp further than
//!   `DEPOSIT_WEBHOOK_TOLERANCE_SECS` from this server's clock is refused, and the provider's
//!   event `id` is an idempotency key kept for good: a replay of the same delivery answers the
//!   first answer, the same id with another body 409, and nothing is credited twice.
//!
//! Both run the same ledger command as a self-service deposit (`Ledger::deposit_by`), under the
//! same idempotency rules.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::idempotent::{idempotent, idempotent_with_key, IdempotencyKey};
use super::json::{typed_body, ApiJson, RawBody};
use super::views::{DepositCreated, DepositView, ErrorBody};
use super::AppState;
use crate::identity::domain::InvalidInput;
use crate::identity::{IdentityError, RequestMeta, Role};
use crate::ledger::service::{CommandIds, Depositor};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_deposit))
        .routes(routes!(webhook_deposit))
}

/// The idempotency namespace of the payment provider's event ids (a fixed id, never a user's:
/// users' ids are UUID v7).
const PROVIDER: Uuid = Uuid::from_u128(0x7061_796d_656e_742d_7072_6f76_6964_6572);

pub const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// `POST /api/admin/deposits`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminDepositRequest {
    /// The credited user's id (a UUID); not the caller's own.
    user_id: String,
    #[schema(example = "BTC")]
    asset: String,
    /// As for a self-service deposit: a decimal string.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    amount: Value,
    /// The payment being booked (bank transfer id, …): 1 to 128 printable ASCII characters;
    /// recorded as the event's causation id.
    reference: String,
}

/// `POST /api/webhooks/deposits`: one deposit the payment provider received.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeposit {
    /// The provider's event id, 1 to 128 printable ASCII characters: a delivery is applied
    /// once per id, for good.
    id: String,
    /// The credited user's id (a UUID).
    user_id: String,
    #[schema(example = "BTC")]
    asset: String,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    amount: Value,
}

/// A deposit in domain values, whoever credits it.
struct Credit {
    user_id: Uuid,
    asset: String,
    amount: rust_decimal::Decimal,
}

fn printable(raw: &str, field: &'static str) -> Result<String, InvalidInput> {
    let value = raw.trim();
    if (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(value.to_owned())
    } else {
        Err(InvalidInput {
            field,
            message: "must be 1 to 128 printable ASCII characters".into(),
        })
    }
}

fn user_id(raw: &str) -> Result<Uuid, InvalidInput> {
    Uuid::parse_str(raw.trim()).map_err(|_| InvalidInput {
        field: "user_id",
        message: "must be a UUID".into(),
    })
}

/// Parses the credit and checks that its user exists (422 naming `user_id` otherwise).
async fn credit(
    state: &AppState,
    user: &str,
    asset: &str,
    amount: &Value,
) -> Result<Credit, ApiError> {
    let assets = &state.ledger.assets;
    let user_id = user_id(user)?;
    let asset = assets.asset(asset, "asset")?;
    let amount = assets.amount(amount, &asset, "amount")?;
    match state.identity.user(user_id).await {
        Ok(_) => Ok(Credit {
            user_id,
            asset,
            amount,
        }),
        Err(IdentityError::UnknownUser) => Err(ApiError::Validation {
            field: "user_id".into(),
            message: "no such user".into(),
        }),
        Err(other) => Err(other.into()),
    }
}

async fn book(
    state: &AppState,
    depositor: &Depositor,
    credit: Credit,
    ids: CommandIds,
    meta: &RequestMeta,
) -> Result<(StatusCode, DepositCreated), ApiError> {
    let applied = state
        .ledger
        .deposit_by(
            depositor,
            credit.user_id,
            &credit.asset,
            credit.amount,
            ids,
            meta,
        )
        .await?;
    let deposit = DepositView {
        id: applied.event.deposit_id,
        amount: state.ledger.assets.format(credit.amount, &credit.asset),
        asset: credit.asset,
        status: "completed".into(),
    };
    Ok((
        StatusCode::CREATED,
        DepositCreated {
            deposit,
            position: applied.position,
        },
    ))
}

/// Credits a user's account (admin; four eyes: never the caller's own account).
#[utoipa::path(
    post,
    path = "/api/admin/deposits",
    tag = "admin",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = AdminDepositRequest,
    responses(
        (status = 201, description = "Deposited.", body = DepositCreated),
        (status = 409, description = "`idempotency_conflict` or `conflict`.", body = ErrorBody),
        (status = 422, description = "`validation_error` (a field — `user_id` also when there is no such user — or the Idempotency-Key) or `balance_limit`.", body = ErrorBody),
    )
)]
async fn admin_deposit(
    State(state): State<AppState>,
    caller: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let admin = caller.user_id();
    let run = async |ids| {
        let request = typed_body::<AdminDepositRequest>(&body)?;
        let reference = printable(&request.reference, "reference")?;
        let credit = credit(&state, &request.user_id, &request.asset, &request.amount).await?;
        let depositor = Depositor::Admin { admin, reference };
        book(&state, &depositor, credit, ids, &meta).await
    };
    Ok(idempotent(&state, admin, &headers, "/api/admin/deposits", &body, run).await)
}

/// Why a webhook delivery is not the provider's. HTTP 401 `unauthorized`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Webhook-Timestamp: missing or not a whole number of seconds")]
    Timestamp,
    #[error(
        "X-Webhook-Timestamp: {0} s away from this server's clock, outside the accepted window"
    )]
    Stale(u64),
    #[error("X-Webhook-Signature: missing or not of the form v1=<hex>")]
    Malformed,
    #[error("X-Webhook-Signature: does not match the body")]
    Mismatch,
}

/// Checks a delivery: the timestamp is within `tolerance_secs` of `now` (unix seconds) and the
/// signature is `v1=hex(HMAC-SHA256(secret, "{timestamp}.{body}"))`, compared in constant time.
/// Pure: the clock is a parameter.
pub fn verify_signature(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Timestamp)?.trim();
    let sent: i64 = timestamp.parse().map_err(|_| SignatureError::Timestamp)?;
    let skew = now.abs_diff(sent);
    if skew > tolerance_secs {
        return Err(SignatureError::Stale(skew));
    }
    let signature = signature
        .and_then(|s| s.trim().strip_prefix("v1="))
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The payment provider reports a deposit (signed; no user session).
#[utoipa::path(
    post,
    path = "/api/webhooks/deposits",
    tag = "wallet",
    params(
        ("X-Webhook-Timestamp" = String, Header, description = "Unix seconds when the provider signed the delivery."),
        ("X-Webhook-Signature" = String, Header, description = "`v1=` and the hex HMAC-SHA256 of `{timestamp}.{raw body}` under `DEPOSIT_WEBHOOK_SECRET`."),
    ),
    request_body = WebhookDeposit,
    responses(
        (status = 201, description = "Deposited (a replay of the same delivery answers the same, with `Idempotent-Replayed: true`).", body = DepositCreated),
        (status = 401, description = "`unauthorized`: missing, stale or wrong signature.", body = ErrorBody),
        (status = 403, description = "`forbidden`: no `DEPOSIT_WEBHOOK_SECRET` is configured.", body = ErrorBody),
        (status = 409, description = "`idempotency_conflict`: this `id` was delivered with another body; or `conflict`.", body = ErrorBody),
        (status = 422, description = "`validation_error` naming the field (`user_id` also when there is no such user) or `balance_limit`.", body = ErrorBody),
    )
)]
async fn webhook_deposit(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> Result<Response, ApiError> {
    let settings = &state.config.deposits;
    let Some(secret) = &settings.webhook_secret else {
        return Err(ApiError::Forbidden(
            "the deposit webhook is not configured (DEPOSIT_WEBHOOK_SECRET)".into(),
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify_signature(
        secret.expose().as_bytes(),
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &raw,
        chrono::Utc::now().timestamp(),
        settings.webhook_tolerance.as_secs(),
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let body: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
    let delivery = typed_body::<WebhookDeposit>(&body)?;
    let event_id = printable(&delivery.id, "id")?;
    let run = async |ids| {
        let credit = credit(&state, &delivery.user_id, &delivery.asset, &delivery.amount).await?;
        let depositor = Depositor::Provider {
            event_id: event_id.clone(),
        };
        book(&state, &depositor, credit, ids, &meta).await
    };
    let route = "/api/webhooks/deposits";
    Ok(idempotent_with_key(&state, PROVIDER, Some(event_id.clone()), route, &body, run).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn only_a_fresh_delivery_signed_with_the_secret_passes() {
        let (secret, body, now) = (
            b"provider-secret-0123456789abcdef0123".as_slice(),
            b"{}",
            1_700_000_000,
        );
        let good = sign(secret, "1700000000", body);
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8]| {
            verify_signature(secret, ts, sig, body, now, 300)
        };
        assert_eq!(check(Some("1700000000"), Some(&good), body), Ok(()));
        assert_eq!(
            check(Some("1700000000"), Some(&good), b"{ }"),
            Err(SignatureError::Mismatch)
        );
        let other = sign(b"another-secret-0123456789abcdef01234", "1700000000", body);
        assert_eq!(
            check(Some("1700000000"), Some(&other), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(None, Some(&good), body),
            Err(SignatureError::Timestamp)
        );
        assert_eq!(
            check(Some("soon"), Some(&good), body),
            Err(SignatureError::Timestamp)
        );
        assert_eq!(
            check(Some("1700000000"), None, body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some("1700000000"), Some("v1=zz"), body),
            Err(SignatureError::Malformed)
        );
        // The timestamp is signed: moving it breaks the signature; an old one is stale.
        assert_eq!(
            check(Some("1700000001"), Some(&good), body),
            Err(SignatureError::Mismatch)
        );
        let old = sign(secret, "1699999000", body);
        assert_eq!(
            check(Some("1699999000"), Some(&old), body),
            Err(SignatureError::Stale(1000))
        );
    }
}
